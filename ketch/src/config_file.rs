//! etcd 3.4's YAML config file (`--config-file`): the keys are the `json` tags of etcd's
//! `embed.Config` and proxy settings, which the flag table records per flag (most keys are the
//! flag's name; the TLS flags live under `client-transport-security` and
//! `peer-transport-security`). Values are decoded as etcd decodes them, YAML through JSON
//! into Go types; see [`crate::kinds`].

use std::collections::BTreeMap;

use serde_yaml_ng::Value as Yaml;

use crate::flags::{EtcdConfig, Flag, CLIENT_SECURITY, FLAGS, PEER_SECURITY};
use crate::goparse::go_quote;
use crate::load::DEFAULT_INITIAL_CLUSTER;
use crate::logging::{Note, Severity};

/// etcd's YAML config file over etcd's defaults. Keys are matched without regard to case, as
/// etcd's JSON decoding does; keys etcd does not know are ignored with a warning (etcd ignores
/// them silently) so a typo does not go unnoticed.
pub fn from_yaml(text: &str, notes: &mut Vec<Note>) -> Result<EtcdConfig, String> {
    let mut config = EtcdConfig::default();
    let document: Yaml =
        serde_yaml_ng::from_str(text).map_err(|e| format!("error parsing YAML: {e}"))?;
    let top = match document {
        Yaml::Null => return Ok(config),
        Yaml::Mapping(map) => map,
        other => {
            return Err(format!(
                "the config file must be a mapping of etcd settings, not {other:?}"
            ))
        }
    };

    let mut by_key: BTreeMap<(Option<&str>, String), &Flag> = BTreeMap::new();
    for flag in FLAGS {
        if let Some((section, key)) = flag.yaml_key() {
            by_key.insert((section, key.to_ascii_lowercase()), flag);
        }
    }
    let mut apply =
        |section: Option<&'static str>, key: &str, node: &Yaml, config: &mut EtcdConfig| {
            let shown = match section {
                Some(s) => format!("{s}.{key}"),
                None => key.to_string(),
            };
            match by_key.get(&(section, key.to_ascii_lowercase())) {
                None => {
                    notes.push(Note::new(
                        Severity::Warning,
                        "etcdmain",
                        format!(
                            "config file key {} is not an etcd 3.4 setting; ignored",
                            go_quote(&shown)
                        ),
                    ));
                    Ok(())
                }
                // A null value leaves the default, as in etcd.
                Some(_) if node.is_null() => Ok(()),
                Some(flag) => (flag.set_yaml)(config, node)
                    .map_err(|e| format!("config file key {}: {e}", go_quote(&shown))),
            }
        };
    for (key, node) in &top {
        let Some(key) = key.as_str() else {
            return Err(format!("config file keys must be strings, found {key:?}"));
        };
        let section = [CLIENT_SECURITY, PEER_SECURITY]
            .into_iter()
            .find(|s| s.eq_ignore_ascii_case(key));
        if let Some(section) = section {
            match node {
                Yaml::Null => {}
                Yaml::Mapping(inner) => {
                    for (inner_key, inner_node) in inner {
                        let inner_key = inner_key.as_str().unwrap_or_default();
                        apply(Some(section), inner_key, inner_node, &mut config)?;
                    }
                }
                other => {
                    return Err(format!(
                        "config file key {}: expected a mapping, found {other:?}",
                        go_quote(key)
                    ))
                }
            }
            continue;
        }
        apply(None, key, node, &mut config)?;
    }
    // A discovery setting replaces the default static cluster.
    if (!config.discovery.is_empty() || !config.discovery_srv.is_empty())
        && config.initial_cluster == DEFAULT_INITIAL_CLUSTER
    {
        config.initial_cluster.clear();
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Y;

    /// The YAML key of every flag that has one, for the sample file's test.
    fn yaml_keys() -> Vec<String> {
        FLAGS
            .iter()
            .filter_map(|f| match f.yaml {
                Y::Same => Some(f.name.to_string()),
                Y::Client(k) => Some(format!("{CLIENT_SECURITY}.{k}")),
                Y::Peer(k) => Some(format!("{PEER_SECURITY}.{k}")),
                Y::No => None,
            })
            .collect()
    }

    const SAMPLE: &str = r#"
name: node1
Data-Dir: /var/lib/ketch
listen-client-urls: http://127.0.0.1:2379,http://10.0.0.1:2379
advertise-client-urls: http://10.0.0.1:2379
listen-peer-urls: http://10.0.0.1:2380
initial-advertise-peer-urls: http://10.0.0.1:2380
initial-cluster: node1=http://10.0.0.1:2380,node2=http://10.0.0.2:2380
initial-cluster-state: existing
initial-cluster-token: 12345
heartbeat-interval: 200
election-timeout: 2000
backend-batch-interval: 5000000
quota-backend-bytes: 8589934592
cors: "*"
host-whitelist: a.example,b.example
cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
log-outputs: [stderr]
logger: zap
auto-compaction-retention: 1
client-transport-security:
  cert-file: /c.pem
  client-cert-auth: true
peer-transport-security:
  key-file: /p-key.pem
  auto-tls: true
wal-dir:
proxy: "off"
proxy-read-timeout: 10
mystery-key: 1
"#;

    #[test]
    fn yaml_keys_map_to_flags() {
        let mut notes = Vec::new();
        let c = from_yaml(SAMPLE, &mut notes).unwrap();
        assert_eq!(
            (c.name.as_str(), c.data_dir.as_str()),
            ("node1", "/var/lib/ketch")
        );
        assert_eq!(
            c.listen_client_urls,
            vec!["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
        );
        assert_eq!(
            c.initial_cluster,
            "node1=http://10.0.0.1:2380,node2=http://10.0.0.2:2380"
        );
        assert_eq!(c.initial_cluster_state, "existing");
        assert_eq!(c.initial_cluster_token, "12345");
        assert_eq!((c.heartbeat_interval, c.election_timeout), (200, 2000));
        assert_eq!(c.backend_batch_interval, 5_000_000);
        assert_eq!(c.quota_backend_bytes, 8_589_934_592);
        assert_eq!(c.host_whitelist, vec!["a.example", "b.example"]);
        assert_eq!(c.cipher_suites.len(), 1);
        assert_eq!(c.log_outputs, vec!["stderr"]);
        assert_eq!(c.logger, "zap");
        assert_eq!(c.auto_compaction_retention, "1");
        assert_eq!(c.cert_file, "/c.pem");
        assert!(c.client_cert_auth);
        assert_eq!(c.peer_key_file, "/p-key.pem");
        assert!(c.peer_auto_tls && !c.auto_tls);
        assert_eq!(c.wal_dir, "");
        assert_eq!(c.proxy_read_timeout, 10);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].text.contains("\"mystery-key\""));
    }

    #[test]
    fn yaml_type_errors_are_reported() {
        let mut notes = Vec::new();
        let err = from_yaml("heartbeat-interval: \"100\"\n", &mut notes).unwrap_err();
        assert_eq!(
            err,
            "config file key \"heartbeat-interval\": cannot use a string as an unsigned integer"
        );
        assert!(from_yaml("backend-batch-interval: 5s\n", &mut notes).is_err());
        assert!(from_yaml("listen-peer-urls: foo\n", &mut notes)
            .unwrap_err()
            .contains("URL scheme must be"));
        assert!(from_yaml("name: [a\n", &mut notes)
            .unwrap_err()
            .starts_with("error parsing YAML"));
        assert_eq!(from_yaml("", &mut notes).unwrap(), EtcdConfig::default());
    }

    #[test]
    fn sample_config_file_uses_only_etcd_keys() {
        let sample = include_str!("../../config/ketch.conf.yml");
        let mut notes = Vec::new();
        let c = from_yaml(sample, &mut notes).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(c.name, "default");
        // Every key of the table appears in the sample, commented or not.
        for key in yaml_keys() {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(sample.contains(&format!("{leaf}:")), "sample lacks {key}");
        }
    }
}
