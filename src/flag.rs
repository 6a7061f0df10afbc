//! Parsers of setting values, shared by the flags each collector declares
//! beside itself, the CLI's own flags and the configuration file, and the
//! defaults of a flag set: one definition of each setting.
//!
//! A collector's `Config` derives `clap::Args`, each field with its flag's
//! id, name, default, parser and help, and `#[group(skip)]` (clap would
//! otherwise make a group named after each struct, and several are
//! `Config`); the CLI adds them with `augment_args` and reads them back
//! with `from_arg_matches`.

use std::path::PathBuf;

use regex::Regex;

pub use crate::duration::{parse_duration as duration, parse_duration_or_zero as duration_or_zero};

/// A duration, as seconds (`5ms` -> 0.005).
pub fn seconds(s: &str) -> Result<f64, String> {
    duration(s).map(|d| d.as_secs_f64())
}

pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err("must be a positive number".into()),
    }
}

pub fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err("must be a number in (0, 1]".into()),
    }
}

pub fn regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| e.to_string())
}

pub fn dir(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if p.is_dir() {
        Ok(p)
    } else {
        Err("not a directory".into())
    }
}

/// Every flag of `T` at its default: what a collector's settings are when
/// no flag is given. The defaults are written once, in the flags' own
/// declarations; a `Default` impl calls this rather than repeating them.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let matches = cmd
        .try_get_matches_from(std::iter::empty::<&str>())
        // Each Config's unit test takes its default: a bad one fails there.
        .expect("every default parses");
    T::from_arg_matches(&matches).expect("every default parses")
}

#[cfg(test)]
mod tests {
    use crate::collectors::{cgroup, disk, filesystem, netns, network, process, tcp_ports};

    /// Every flag set's defaults parse, and mean what the docs say.
    #[test]
    fn every_default_parses() {
        assert!(disk::Config::default().device_exclude.is_match("sda1"));
        assert_eq!(network::Config::default().max_devices, 64);
        let fs = filesystem::Config::default();
        assert_eq!(fs.mount_timeout, std::time::Duration::from_secs(5));
        assert_eq!(cgroup::Config::default().max_cgroups, 500);
        assert!(cgroup::Config::default().kubelet.is_none());
        let p = process::Config::default();
        assert!(p.include.is_none());
        assert_eq!(p.rescan_interval, std::time::Duration::from_secs(30));
        assert!(!netns::Config::default().enabled);
        assert_eq!(tcp_ports::TcpPortsConfig::default().cpu_budget, 0.005);
        assert_eq!(crate::collectors::udp::Config::default().cpu_budget, 0.005);
        let q = crate::queue::QueueConfig::default();
        assert_eq!(q.delay_target, 0.005);
        assert_eq!(q.sample_interval, std::time::Duration::from_millis(10));
        assert!(
            crate::collectors::textfile::Config::default()
                .directory
                .is_none()
        );
    }
}
