//! Memory errors from the EDAC subsystem:
//! `/sys/devices/system/edac/mc/mc<N>/{ce_count,ue_count,ce_noinfo_count,ue_noinfo_count}`
//! (Documentation/driver-api/edac.rst). Correctable errors are a warning of
//! failing DIMMs; uncorrectable ones crash processes or the host. Absent on
//! virtual machines and hosts without an EDAC driver.

use super::{Collect, CollectError, Config, parse_u64};
use crate::metrics::{Desc, Family, label};

const CORRECTABLE: Desc = Desc::counter(
    "edac_correctable_errors",
    "Errors: memory errors corrected by ECC, per memory controller (sysfs edac mc<N>/ce_count).",
);
const UNCORRECTABLE: Desc = Desc::counter(
    "edac_uncorrectable_errors",
    "Errors: memory errors ECC could not correct, per memory controller (sysfs edac mc<N>/ue_count).",
);
const CORRECTABLE_NOINFO: Desc = Desc::counter(
    "edac_correctable_noinfo_errors",
    "Errors: corrected memory errors not attributed to a DIMM (sysfs edac mc<N>/ce_noinfo_count).",
);
const UNCORRECTABLE_NOINFO: Desc = Desc::counter(
    "edac_uncorrectable_noinfo_errors",
    "Errors: uncorrectable memory errors not attributed to a DIMM (sysfs edac mc<N>/ue_noinfo_count).",
);

pub struct EdacCollector;

impl Collect for EdacCollector {
    fn collect(&self, cfg: &Config) -> Result<Vec<Family>, CollectError> {
        let dir = cfg.roots.sys("devices/system/edac/mc");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CollectError::Unsupported(format!(
                    "{} absent: no EDAC driver (virtual machine or no ECC memory)",
                    dir.display()
                )));
            }
            Err(e) => return Err(CollectError::Io(format!("{}: {e}", dir.display()))),
        };
        let mut controllers: Vec<(u32, std::path::PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name.strip_prefix("mc")?.parse::<u32>().ok()?;
                Some((n, e.path()))
            })
            .collect();
        controllers.sort();
        let mut fams: Vec<Family> = [
            CORRECTABLE,
            UNCORRECTABLE,
            CORRECTABLE_NOINFO,
            UNCORRECTABLE_NOINFO,
        ]
        .into_iter()
        .map(Family::new)
        .collect();
        for (n, path) in controllers {
            for (fam, file) in
                fams.iter_mut()
                    .zip(["ce_count", "ue_count", "ce_noinfo_count", "ue_noinfo_count"])
            {
                let p = path.join(file);
                let text = match crate::roots::read_kept(&p) {
                    Ok(t) => t,
                    // Only the noinfo counts are optional (absent on some drivers).
                    Err(CollectError::Missing(_)) if file.contains("noinfo") => continue,
                    Err(e) => return Err(e),
                };
                let v = parse_u64(file, &text).map_err(|e| CollectError::parse(&p, e))?;
                fam.push([label("controller", n.to_string())], v);
            }
        }
        Ok(fams)
    }
}
