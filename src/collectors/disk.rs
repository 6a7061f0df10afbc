//! Block device utilization, saturation and errors from `/proc/diskstats`
//! and sysfs.
//!
//! ```text
//!  254       0 vda 6024 2892 1107066 4527 1465 12252 619288 1373 0 1484 6137 3219 90 102032 226 66 9
//! ```
//! After `major minor name`: 11 fields (kernels < 4.18), 15 (+discards,
//! 4.18+) or 17 (+flushes, 5.5+). Field 9 (in flight) is the only gauge;
//! field 10 is milliseconds busy (utilization) and field 11 milliseconds
//! weighted by in-flight count (its rate is the average queue size:
//! saturation). Sectors are 512 bytes whatever the device's sector size
//! (Documentation/admin-guide/iostats.rst). Parsed by procfs-core.

use procfs_core::{DiskStat, DiskStats, FromRead};
use regex::Regex;

use super::{Collect, CollectError, Config as CollectConfig, ParseError};
use crate::metrics::{Desc, Family, label};
use crate::roots::read_attr;

/// /proc/diskstats counts 512-byte sectors for every device.
const BYTES_PER_SECTOR: u64 = 512;
const MILLIS_PER_SECOND: f64 = 1e3;

/// node_exporter's default, plus MMC partitions: partitions and RAM/loop
/// devices, whose I/O is already counted on the whole disk or is not disk I/O.
pub const DEFAULT_DEVICE_EXCLUDE: &str =
    r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$";

/// Block devices' names by `major:minor` (`8:0` → `sda`), from
/// /proc/diskstats, read again only when asked for a device the table does
/// not name, or when older than asked: the cgroup and ebpf collectors name
/// devices by number, and a device appears far more rarely than a scrape
/// comes (the disk collector reads that file at every scrape itself).
#[derive(Debug, Default)]
pub struct DeviceNames(std::sync::Mutex<NameTable>);

/// The names, and when the file was last read.
#[derive(Debug, Default)]
pub struct NameTable {
    names: std::collections::HashMap<String, String>,
    read: Option<std::time::Instant>,
}

impl std::ops::Deref for NameTable {
    type Target = std::collections::HashMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.names
    }
}

impl DeviceNames {
    /// The table, read anew from `diskstats` if it lacks any of `devs`.
    pub fn covering<D: AsRef<str>>(
        &self,
        diskstats: &std::path::Path,
        devs: impl IntoIterator<Item = D>,
    ) -> std::sync::MutexGuard<'_, NameTable> {
        self.current(diskstats, devs, None).0
    }

    /// [`DeviceNames::covering`], read anew also when last read `max_age`
    /// ago or more; and whether it was read now, so that it lists only the
    /// devices that exist (where the file cannot be read the last table is
    /// kept, and the answer is false).
    pub fn current<D: AsRef<str>>(
        &self,
        diskstats: &std::path::Path,
        devs: impl IntoIterator<Item = D>,
        max_age: Option<std::time::Duration>,
    ) -> (std::sync::MutexGuard<'_, NameTable>, bool) {
        // A panic while refreshing left a table that is still a table.
        let mut table = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let stale =
            max_age.is_some_and(|age| table.read.is_none_or(|t| now.duration_since(t) >= age));
        if !stale
            && devs
                .into_iter()
                .all(|d| table.names.contains_key(d.as_ref()))
        {
            return (table, false);
        }
        // Tried now, whatever the outcome: `max_age` does not bring an
        // unreadable file back at every call (a missing device still does).
        table.read = Some(now);
        let text = crate::roots::read(diskstats).ok();
        match text.and_then(|t| parse_diskstats(&t).ok()) {
            Some(disks) => {
                table.names = disks
                    .into_iter()
                    .map(|d| (format!("{}:{}", d.major, d.minor), d.name))
                    .collect();
                (table, true)
            }
            None => (table, false),
        }
    }
}

/// The disk collector's flags.
#[derive(Debug, Clone, clap::Args)]
// Flags, not a group: clap names a group after the struct, and every
// collector\'s is `Config`.
#[group(skip)]
pub struct Config {
    #[arg(
        id = "collector.disk.device-exclude",
        long = "collector.disk.device-exclude",
        value_name = "REGEX",
        default_value = DEFAULT_DEVICE_EXCLUDE,
        value_parser = crate::flag::regex,
        help = "Block devices to leave out (partitions and RAM/loop devices by default)"
    )]
    pub device_exclude: Regex,
}

impl Default for Config {
    fn default() -> Self {
        crate::flag::defaults()
    }
}

pub fn parse_diskstats(text: &str) -> Result<Vec<DiskStat>, ParseError> {
    let stats = DiskStats::from_read(text.as_bytes()).map_err(|e| ParseError(e.to_string()))?;
    // The kernel lists every block device, RAM disks included: an empty file
    // means a truncated read, not a diskless machine.
    if stats.0.is_empty() {
        return Err(ParseError::new("no devices listed"));
    }
    Ok(stats.0)
}

const READS: Desc = Desc::counter(
    "disk_reads_completed",
    "Reads completed (/proc/diskstats field 1).",
);
const READS_MERGED: Desc = Desc::counter(
    "disk_reads_merged",
    "Adjacent reads merged into one (/proc/diskstats field 2).",
);
const READ_BYTES: Desc =
    Desc::counter("disk_read", "Bytes read (/proc/diskstats field 3 x 512).").bytes();
const READ_TIME: Desc = Desc::counter(
    "disk_read_time",
    "Seconds spent by all reads, queued and in service; divided by reads it is read await (/proc/diskstats field 4).",
)
.seconds();
const WRITES: Desc = Desc::counter(
    "disk_writes_completed",
    "Writes completed (/proc/diskstats field 5).",
);
const WRITES_MERGED: Desc = Desc::counter(
    "disk_writes_merged",
    "Adjacent writes merged into one (/proc/diskstats field 6).",
);
const WRITTEN_BYTES: Desc = Desc::counter(
    "disk_written",
    "Bytes written (/proc/diskstats field 7 x 512).",
)
.bytes();
const WRITE_TIME: Desc = Desc::counter(
    "disk_write_time",
    "Seconds spent by all writes, queued and in service; divided by writes it is write await (/proc/diskstats field 8).",
)
.seconds();
const IN_FLIGHT: Desc = Desc::gauge(
    "disk_io_in_flight",
    "Saturation: I/Os issued to the device and not yet completed (/proc/diskstats field 9).",
);
const IO_TIME: Desc = Desc::counter(
    "disk_io_time",
    "Utilization: seconds the device had I/O in flight; its rate is the busy share, misleading for devices that serve requests in parallel (/proc/diskstats field 10).",
)
.seconds();
const IO_TIME_WEIGHTED: Desc = Desc::counter(
    "disk_io_time_weighted",
    "Saturation: seconds of I/O weighted by requests in flight; its rate is the average queue size (/proc/diskstats field 11).",
)
.seconds();
const DISCARDS: Desc = Desc::counter(
    "disk_discards_completed",
    "Discards completed (/proc/diskstats field 12).",
);
const DISCARDS_MERGED: Desc = Desc::counter(
    "disk_discards_merged",
    "Discards merged (/proc/diskstats field 13).",
);
const DISCARDED_BYTES: Desc = Desc::counter(
    "disk_discarded",
    "Bytes discarded (/proc/diskstats field 14 x 512).",
)
.bytes();
const DISCARD_TIME: Desc = Desc::counter(
    "disk_discard_time",
    "Seconds spent by all discards (/proc/diskstats field 15).",
)
.seconds();
const FLUSHES: Desc = Desc::counter(
    "disk_flush_requests",
    "Flush requests completed (/proc/diskstats field 16).",
);
const FLUSH_TIME: Desc = Desc::counter(
    "disk_flush_time",
    "Seconds spent by all flush requests (/proc/diskstats field 17).",
)
.seconds();
const IO_ERRORS: Desc = Desc::counter(
    "disk_io_errors",
    "Errors: I/O requests the SCSI device completed with an error (/sys/block/<device>/device/ioerr_cnt).",
);

/// Maps parsed stats onto families; `io_errors(name)` looks up the sysfs error count.
pub fn emit(
    stats: &[DiskStat],
    exclude: &Regex,
    io_errors: impl Fn(&str) -> Option<u64>,
) -> Vec<Family> {
    let mut fams: Vec<Family> = [
        READS,
        READS_MERGED,
        READ_BYTES,
        READ_TIME,
        WRITES,
        WRITES_MERGED,
        WRITTEN_BYTES,
        WRITE_TIME,
        IN_FLIGHT,
        IO_TIME,
        IO_TIME_WEIGHTED,
        DISCARDS,
        DISCARDS_MERGED,
        DISCARDED_BYTES,
        DISCARD_TIME,
        FLUSHES,
        FLUSH_TIME,
        IO_ERRORS,
    ]
    .into_iter()
    .map(Family::new)
    .collect();
    let secs = |ms: u64| ms as f64 / MILLIS_PER_SECOND;
    let bytes = |sectors: u64| sectors.saturating_mul(BYTES_PER_SECTOR);
    for d in stats.iter().filter(|d| !exclude.is_match(&d.name)) {
        let l = || [label("device", d.name.clone())];
        fams[0].push(l(), d.reads);
        fams[1].push(l(), d.merged);
        fams[2].push(l(), bytes(d.sectors_read));
        fams[3].push(l(), secs(d.time_reading));
        fams[4].push(l(), d.writes);
        fams[5].push(l(), d.writes_merged);
        fams[6].push(l(), bytes(d.sectors_written));
        fams[7].push(l(), secs(d.time_writing));
        fams[8].push(l(), d.in_progress);
        fams[9].push(l(), secs(d.time_in_progress));
        fams[10].push(l(), secs(d.weighted_time_in_progress));
        if let (Some(n), Some(m), Some(s), Some(t)) = (
            d.discards,
            d.discards_merged,
            d.sectors_discarded,
            d.time_discarding,
        ) {
            fams[11].push(l(), n);
            fams[12].push(l(), m);
            fams[13].push(l(), bytes(s));
            fams[14].push(l(), secs(t));
        }
        if let (Some(n), Some(t)) = (d.flushes, d.time_flushing) {
            fams[15].push(l(), n);
            fams[16].push(l(), secs(t));
        }
        if let Some(errors) = io_errors(&d.name) {
            fams[17].push(l(), errors);
        }
    }
    fams
}

/// `ioerr_cnt` is printed in hex with a `0x` prefix.
pub fn parse_ioerr_cnt(text: &str) -> Option<u64> {
    let t = text.trim();
    u64::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

pub struct DiskCollector;

impl Collect for DiskCollector {
    fn collect(&self, cfg: &CollectConfig) -> Result<Vec<Family>, CollectError> {
        let path = cfg.roots.proc("diskstats");
        let stats = parse_diskstats(&crate::roots::read_kept(&path)?)
            .map_err(|e| CollectError::parse(&path, e))?;
        Ok(emit(&stats, &cfg.disk.device_exclude, |name| {
            // Device names never contain '/', but a crafted one must not escape sysfs.
            if name.contains('/') {
                return None;
            }
            read_attr(&cfg.roots.sys(&format!("block/{name}/device/ioerr_cnt")))
                .and_then(|t| parse_ioerr_cnt(&t))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    fn series(fams: &[Family], name: &str, dev: &str) -> Option<Value> {
        fams.iter()
            .find(|f| f.desc.exposed_name() == name)?
            .samples
            .iter()
            .find(|s| s.labels[0].1 == dev)
            .map(|s| s.value.clone())
    }

    #[test]
    fn eleven_fifteen_and_seventeen_field_lines() {
        let text = include_str!("../../tests/fixtures/proc/diskstats");
        let stats = parse_diskstats(text).unwrap();
        let fams = emit(&stats, &Config::default().device_exclude, |_| None);
        // 14 fields in all: 11 stats, kernel < 4.18.
        assert_eq!(
            series(&fams, "sojourn_disk_reads_completed_total", "sda"),
            Some(Value::Int(25354637))
        );
        assert_eq!(
            series(&fams, "sojourn_disk_discards_completed_total", "sda"),
            None
        );
        // 18 fields: discards present, flushes absent.
        assert_eq!(
            series(&fams, "sojourn_disk_discards_completed_total", "sdb"),
            Some(Value::Int(68851))
        );
        assert_eq!(
            series(&fams, "sojourn_disk_flush_requests_total", "sdb"),
            None
        );
        // 20 fields: flushes too.
        assert_eq!(
            series(&fams, "sojourn_disk_flush_requests_total", "sdc"),
            Some(Value::Int(1555))
        );
        assert_eq!(
            series(&fams, "sojourn_disk_flush_time_seconds_total", "sdc"),
            Some(Value::Float(1.944))
        );
    }

    #[test]
    fn sectors_are_512_bytes_and_ms_are_seconds() {
        let stats = parse_diskstats(" 254 0 vda 6024 2892 1107066 4527 1465 12252 619288 1373 0 1484 6137 3219 90 102032 226 66 9\n").unwrap();
        let fams = emit(&stats, &Config::default().device_exclude, |_| Some(26));
        assert_eq!(
            series(&fams, "sojourn_disk_read_bytes_total", "vda"),
            Some(Value::Int(1107066 * 512))
        );
        assert_eq!(
            series(&fams, "sojourn_disk_io_time_weighted_seconds_total", "vda"),
            Some(Value::Float(6.137))
        );
        assert_eq!(
            series(&fams, "sojourn_disk_discarded_bytes_total", "vda"),
            Some(Value::Int(102032 * 512))
        );
        assert_eq!(
            series(&fams, "sojourn_disk_io_errors_total", "vda"),
            Some(Value::Int(26))
        );
    }

    #[test]
    fn partitions_and_virtual_devices_excluded_by_default() {
        let re = Config::default().device_exclude;
        for name in [
            "sda1",
            "vda2",
            "nvme0n1p1",
            "mmcblk0p2",
            "loop0",
            "ram3",
            "zram0",
        ] {
            assert!(re.is_match(name), "{name}");
        }
        for name in ["sda", "vda", "nvme0n1", "mmcblk0", "dm-0", "md0"] {
            assert!(!re.is_match(name), "{name}");
        }
    }

    #[test]
    fn ioerr_cnt_is_hex() {
        assert_eq!(parse_ioerr_cnt("0x1a\n"), Some(26));
        assert_eq!(parse_ioerr_cnt("zz"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_diskstats("8 0 sda 1 2 x\n").is_err());
        assert!(parse_diskstats("8 0 sda 1 2 3\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_diskstats(&s);
        }
    }
}
