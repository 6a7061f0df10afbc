//! Native (exponential) histogram buckets, as Prometheus defines them:
//! bucket `i` of schema `s` holds values in (2^((i-1)/2^s), 2^(i/2^s)].
//!
//! sojourn records latencies at schema 3 (eight buckets per doubling, each
//! 9 % wider than the last) into a fixed dense range from about 1 µs to
//! about 68 min, so that recording is an array index and an atomic add;
//! the sparse spans and deltas of the exposition are built at scrape time.

/// Buckets per power of two: 2^SCHEMA.
pub const SCHEMA: i32 = 3;
/// Values at or under this (2^-20 s, ~0.95 µs) count in the zero bucket.
pub const ZERO_THRESHOLD: f64 = 1.0 / 1_048_576.0;
/// Index of the first dense bucket: the one just above the zero threshold.
const FIRST: i32 = -20 * 8 + 1;
/// Index of the last: up to 2^12 s; larger values are counted here.
const LAST: i32 = 12 * 8;
/// Dense buckets recorded.
pub const DENSE: usize = (LAST - FIRST + 1) as usize;

/// 2^(k/8) for k in 0..8: lower bounds within one doubling.
const WITHIN: [f64; 8] = [
    1.0,
    1.090_507_732_665_257_7,
    1.189_207_115_002_721,
    1.296_839_554_651_009_6,
    std::f64::consts::SQRT_2,
    1.542_210_825_407_940_8,
    1.681_792_830_507_429,
    1.834_008_086_409_342_5,
];

/// Where `v` is counted: None for the zero bucket (and NaN), else the
/// offset into the dense range.
pub fn dense_index(v: f64) -> Option<usize> {
    if v.is_nan() || v <= ZERO_THRESHOLD {
        return None;
    }
    if v.is_infinite() {
        return Some(DENSE - 1);
    }
    let bits = v.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let mantissa = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    let within = WITHIN.partition_point(|b| *b < mantissa) as i32;
    let index = (exponent * 8 + within).clamp(FIRST, LAST);
    Some((index - FIRST) as usize)
}

/// A native histogram's buckets in the exposition's sparse form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NativeBuckets {
    /// 2^schema buckets per power of two.
    pub schema: i32,
    /// Values at or under this count in the zero bucket.
    pub zero_threshold: f64,
    pub zero_count: u64,
    /// (offset, length): the first offset is the first bucket's index, the
    /// others the gap after the previous span.
    pub spans: Vec<(i32, u32)>,
    /// Each bucket's count minus the previous one's (the first's minus 0).
    pub deltas: Vec<i64>,
}

impl NativeBuckets {
    /// From dense counts (one per [`dense_index`]) and the zero count.
    pub fn from_dense(zero_count: u64, dense: &[u64]) -> Self {
        Self::from_counts(SCHEMA, ZERO_THRESHOLD, zero_count, FIRST, dense)
    }

    /// From the counts of consecutive buckets of `schema`, the first of
    /// index `first`, and the zero bucket's.
    pub fn from_counts(
        schema: i32,
        zero_threshold: f64,
        zero_count: u64,
        first: i32,
        counts: &[u64],
    ) -> Self {
        let mut out = NativeBuckets {
            schema,
            zero_threshold,
            zero_count,
            ..Default::default()
        };
        let mut previous_count = 0i64;
        // Index just past the last bucket of the current span.
        let mut span_end: Option<i32> = None;
        for (offset, &count) in counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let index = first + offset as i32;
            match span_end {
                Some(end) if end == index => {
                    if let Some(last) = out.spans.last_mut() {
                        last.1 += 1;
                    }
                }
                Some(end) => out.spans.push((index - end, 1)),
                None => out.spans.push((index, 1)),
            }
            span_end = Some(index + 1);
            out.deltas.push(count as i64 - previous_count);
            previous_count = count as i64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(v: f64) -> i32 {
        FIRST + dense_index(v).unwrap() as i32
    }

    #[test]
    fn bucket_boundaries_are_prometheus_ones() {
        // Bucket i holds (2^((i-1)/8), 2^(i/8)].
        assert_eq!(index(1.0), 0);
        assert_eq!(index(1.0001), 1);
        assert_eq!(index(2.0), 8);
        assert_eq!(index(1.5), 5);
        assert_eq!(index(0.5), -8);
        assert_eq!(index(0.001), -79);
        for i in -150..90 {
            let upper = 2f64.powf(f64::from(i) / 8.0);
            assert_eq!(index(upper * (1.0 - 1e-9)), i, "just under 2^({i}/8)");
            assert_eq!(index(upper * (1.0 + 1e-9)), i + 1, "just over 2^({i}/8)");
        }
        assert_eq!(dense_index(0.0), None);
        assert_eq!(dense_index(ZERO_THRESHOLD), None);
        assert_eq!(dense_index(f64::NAN), None);
        assert_eq!(index(1e9), LAST, "huge values land in the last bucket");
    }

    #[test]
    fn sparse_form_has_spans_and_deltas() {
        let mut dense = vec![0u64; DENSE];
        let at = |i: i32| (i - FIRST) as usize;
        dense[at(0)] = 2;
        dense[at(1)] = 3;
        dense[at(5)] = 1;
        let b = NativeBuckets::from_dense(4, &dense);
        assert_eq!(b.zero_count, 4);
        assert_eq!(b.spans, vec![(0, 2), (3, 1)]);
        assert_eq!(b.deltas, vec![2, 1, -2]);
        assert!(
            NativeBuckets::from_dense(0, &vec![0; DENSE])
                .spans
                .is_empty()
        );
    }
}
