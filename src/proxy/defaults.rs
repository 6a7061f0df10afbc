//! Each proxy setting's default, written once as the command line takes
//! it: `sojourn proxy`'s flags show these, and a service of
//! `--config.file` that leaves a setting out gets the same.

/// `--upstream.connect-timeout`, `connect_timeout`.
pub const CONNECT_TIMEOUT: &str = "1s";
/// `--upstream.timeout`, `timeout`.
pub const TIMEOUT: &str = "30s";
/// `--proxy.latency-target`, `latency_target`.
pub const LATENCY_TARGET: &str = "500ms";
/// `--proxy.header-timeout`, `header_timeout`.
pub const HEADER_TIMEOUT: &str = "10s";
/// `--proxy.idle-timeout`, `idle_timeout` (nginx's `keepalive_timeout`).
pub const IDLE_TIMEOUT: &str = "75s";
/// `--proxy.send-timeout`, `send_timeout` (nginx's `send_timeout`).
pub const SEND_TIMEOUT: &str = "60s";
/// `--proxy.max-connections`, `max_connections`.
pub const MAX_CONNECTIONS: &str = "10000";
/// `--proxy.drain-timeout`, `drain_timeout`.
pub const DRAIN_TIMEOUT: &str = "30s";
/// `--proxy.quantile-window`, `quantile_window`.
pub const QUANTILE_WINDOW: &str = "1m";

/// A default duration, parsed as the flag's value is.
pub fn duration(default: &str) -> std::time::Duration {
    crate::duration::parse_duration(default).expect("each default parses (tested)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_default_is_a_value_its_flag_takes() {
        for d in [
            super::CONNECT_TIMEOUT,
            super::TIMEOUT,
            super::LATENCY_TARGET,
            super::HEADER_TIMEOUT,
            super::IDLE_TIMEOUT,
            super::SEND_TIMEOUT,
            super::DRAIN_TIMEOUT,
            super::QUANTILE_WINDOW,
        ] {
            assert!(crate::duration::parse_duration(d).is_ok(), "{d}");
        }
        assert!(super::MAX_CONNECTIONS.parse::<usize>().is_ok());
    }
}
