//! Queue delay: CoDel-style standing-queue metrics for every queue sojourn
//! can see. [`codel`] is the pure estimator.

pub mod codel;
