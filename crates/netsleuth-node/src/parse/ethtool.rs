//! `ethtool -k DEV` (the device's offload features), one or more devices' outputs concatenated, each
//! starting with ethtool's own `Features for DEV:` line.

use super::{numbered_lines, IssueLog, Parsed};
use serde::{Deserialize, Serialize};

/// One feature of a device as `ethtool -k` prints it: `tx-checksum-ip-generic: on [fixed]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    pub on: bool,
    /// `[fixed]`: the driver does not let it change.
    pub fixed: bool,
    /// `[requested on]` / `[requested off]`: what was asked, when it differs from what is.
    pub requested: Option<bool>,
}

/// The features of one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFeatures {
    pub device: String,
    pub features: Vec<Feature>,
}

impl DeviceFeatures {
    /// Whether a feature is on; `None` when the device does not list it.
    pub fn is_on(&self, name: &str) -> Option<bool> {
        self.features.iter().find(|f| f.name == name).map(|f| f.on)
    }
}

/// Reads `ethtool -k` output. A line that is neither a header nor `name: on|off [flags]` is counted
/// as an issue and skipped; features before any header have no device and are counted too.
pub fn parse_ethtool_features(text: &str) -> Parsed<Vec<DeviceFeatures>> {
    let mut devices: Vec<DeviceFeatures> = Vec::new();
    let mut issues = IssueLog::default();
    for (n, line) in numbered_lines(text) {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        if let Some(dev) = l
            .strip_prefix("Features for ")
            .and_then(|r| r.strip_suffix(':'))
        {
            devices.push(DeviceFeatures {
                device: dev.to_string(),
                features: Vec::new(),
            });
            continue;
        }
        let Some((name, rest)) = l.split_once(": ") else {
            issues.push(n, "unknown-line", line);
            continue;
        };
        let mut words = rest.split_whitespace();
        let on = match words.next() {
            Some("on") => true,
            Some("off") => false,
            _ => {
                issues.push(n, "bad-value", line);
                continue;
            }
        };
        let flags = words.collect::<Vec<_>>().join(" ");
        let requested = if flags.contains("[requested on]") {
            Some(true)
        } else if flags.contains("[requested off]") {
            Some(false)
        } else {
            None
        };
        let Some(dev) = devices.last_mut() else {
            issues.push(n, "no-device", line);
            continue;
        };
        dev.features.push(Feature {
            name: name.to_string(),
            on,
            fixed: flags.contains("[fixed]"),
            requested,
        });
    }
    Parsed {
        value: devices,
        issues,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real `ethtool -k` output of a flannel VXLAN device (ethtool 6.x), cut to the lines that matter
    /// and one of each flag.
    const FLANNEL: &str = "Features for flannel.1:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ipv4: off [fixed]
\ttx-checksum-ip-generic: on
\ttx-checksum-ipv6: off [fixed]
scatter-gather: on
tcp-segmentation-offload: on
\ttx-tcp-segmentation: on
tx-udp_tnl-segmentation: off [fixed]
tx-udp_tnl-csum-segmentation: off [fixed]
udp-fragmentation-offload: off [requested on]
";

    #[test]
    fn reads_features_of_each_device() {
        let text = format!(
            "{FLANNEL}Features for vxlan.calico:\ntx-checksumming: off\n\ttx-checksum-ip-generic: off\n"
        );
        let p = parse_ethtool_features(&text);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(p.value.len(), 2);
        let f = &p.value[0];
        assert_eq!(f.device, "flannel.1");
        assert_eq!(f.is_on("tx-checksum-ip-generic"), Some(true));
        assert_eq!(f.is_on("tx-udp_tnl-csum-segmentation"), Some(false));
        assert_eq!(f.is_on("no-such-feature"), None);
        let ipv4 = f
            .features
            .iter()
            .find(|x| x.name == "tx-checksum-ipv4")
            .unwrap();
        assert!(ipv4.fixed && !ipv4.on);
        let ufo = f
            .features
            .iter()
            .find(|x| x.name == "udp-fragmentation-offload")
            .unwrap();
        assert_eq!((ufo.on, ufo.requested), (false, Some(true)));
        assert_eq!(p.value[1].is_on("tx-checksum-ip-generic"), Some(false));
    }

    #[test]
    fn damage_is_counted_not_fatal() {
        let p = parse_ethtool_features(
            "tx-checksumming: on\nFeatures for eth0:\ngarbage\ntx-checksumming: maybe\nrx-checksumming: on [fixed]\n",
        );
        assert_eq!(p.issues.count("no-device"), 1);
        assert_eq!(p.issues.count("unknown-line"), 1);
        assert_eq!(p.issues.count("bad-value"), 1);
        assert_eq!(p.value[0].features.len(), 1);
    }
}
