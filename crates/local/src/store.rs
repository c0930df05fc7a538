//! The local control plane's state in SQLite: objects, their status, clusters, node processes
//! and events. One writer (the server); the file is private to the user.

use std::path::{Path, PathBuf};

use rayservice_api::RayClusterSpec;
use rayservice_core::ClusterMemory;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("state database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer rayservice.
    #[error(
        "state database {path} has schema version {found}, newer than this rayservice knows ({supported}); use the newer rayservice, or set RAYSERVICE_HOME to another directory"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// A stored JSON document does not decode.
    #[error("state database: stored {what} does not decode: {source}")]
    Decode {
        /// Which document.
        what: String,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

/// A RayService as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceRecord {
    /// `metadata.name`.
    pub name: String,
    /// The object as the user gave it (with metadata filled: uid, generation, creationTimestamp).
    pub object: serde_json::Value,
    /// The spec the core acts on: local `working_dir`s replaced by packaged URIs.
    pub resolved_spec: serde_json::Value,
    /// The last status written.
    pub status: serde_json::Value,
    /// Set while it is being deleted.
    pub deleting: bool,
}

/// The `service` of a cluster applied on its own (a standalone RayCluster): it has no owner.
pub const NO_OWNER: &str = "";

/// A cluster as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterRecord {
    /// `S-raycluster-xxxxx`.
    pub name: String,
    /// Owning RayService; [`NO_OWNER`] for a RayCluster applied on its own.
    pub service: String,
    /// The RayCluster spec it runs.
    pub spec: RayClusterSpec,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// What the decision core asked to keep about it (spec hash, serve config, deletion).
    pub memory: ClusterMemory,
    /// Its ports and temp dir (see `cluster::ClusterLayout`).
    pub layout: serde_json::Value,
}

/// A Ray node process as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    /// Pod-like name: `CLUSTER-head-xxxxx` or `CLUSTER-worker-GROUP-xxxxx`.
    pub name: String,
    /// Its cluster.
    pub cluster: String,
    /// `head` or `worker`.
    pub node_type: String,
    /// Worker group (`headgroup` for the head).
    pub group: String,
    /// Process id (also its process group id) while it runs.
    pub pid: Option<i32>,
    /// Start time, Unix seconds.
    pub started_at: i64,
    /// How often it was restarted.
    pub restarts: i32,
    /// Where its output goes.
    pub log_path: String,
    /// The node's own ports (node manager, object manager, ...).
    pub ports: serde_json::Value,
    /// Who the process is (`process::identity`: boot id and start time), recorded when it was
    /// started; a pid is adopted or signalled only while it still names that process.
    #[serde(default)]
    pub identity: Option<String>,
}

impl NodeRecord {
    /// A node of `cluster` not started yet: no pid, ports chosen when it first starts.
    pub fn new_node(cluster: &str, node_type: &str, group: &str, name: String) -> NodeRecord {
        NodeRecord {
            name,
            cluster: cluster.to_string(),
            node_type: node_type.to_string(),
            group: group.to_string(),
            pid: None,
            started_at: 0,
            restarts: 0,
            log_path: String::new(),
            ports: serde_json::Value::Null,
            identity: None,
        }
    }
}

/// An event as stored; repeated ones are counted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRecord {
    /// `RayService` or `RayCluster`.
    pub object_kind: String,
    /// Object name.
    pub object_name: String,
    /// Normal or Warning.
    pub event_type: String,
    /// CamelCase reason.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// How often.
    pub count: i64,
    /// First time, Unix seconds.
    pub first_seen: i64,
    /// Last time, Unix seconds.
    pub last_seen: i64,
}

/// The state database.
pub struct Store {
    connection: Connection,
    path: PathBuf,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS rayservices (
    name TEXT PRIMARY KEY,
    object TEXT NOT NULL,
    resolved_spec TEXT NOT NULL,
    status TEXT NOT NULL,
    deleting INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS clusters (
    name TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    delete_at INTEGER,
    layout TEXT NOT NULL,
    submitted_config_hash TEXT,
    rejected_hash TEXT,
    rejected_message TEXT
);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    node_type TEXT NOT NULL,
    grp TEXT NOT NULL,
    pid INTEGER,
    started_at INTEGER NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0,
    log_path TEXT NOT NULL,
    ports TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    object_kind TEXT NOT NULL,
    object_name TEXT NOT NULL,
    event_type TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_object ON events (object_name, id);
"#;

/// Schema changes after [`SCHEMA`] (version 1, the tables as first released), in order: entry `i` upgrades version `i + 1`
/// to `i + 2`. The version is kept in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    // 2: the core's memory of a cluster in one typed column.
    "ALTER TABLE clusters ADD COLUMN memory TEXT;",
    // 3: who a node's process is, so that a reused pid is never adopted or signalled.
    "ALTER TABLE nodes ADD COLUMN identity TEXT;",
    // 4: RayClusters applied on their own (KubeRay's ray-cluster samples), as the user gave them.
    "CREATE TABLE IF NOT EXISTS rayclusters (name TEXT PRIMARY KEY, object TEXT NOT NULL);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1 + MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`], each step in a transaction; refuses a newer one.
/// A database from before versions were kept (version 0) is recognised by its columns.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sqlite)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        connection.execute_batch(SCHEMA).map_err(sqlite)?;
        let has_column = |table: &str, column: &str| -> Result<bool, StoreError> {
            connection
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
                    params![table, column],
                    |row| row.get::<_, i64>(0),
                )
                .map(|count| count > 0)
                .map_err(sqlite)
        };
        let has_table = |table: &str| -> Result<bool, StoreError> {
            connection
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    params![table],
                    |row| row.get::<_, i64>(0),
                )
                .map(|count| count > 0)
                .map_err(sqlite)
        };
        version = if has_table("rayclusters")? {
            4
        } else if has_column("nodes", "identity")? {
            3
        } else if has_column("clusters", "memory")? {
            2
        } else {
            1
        };
        connection
            .pragma_update(None, "user_version", version)
            .map_err(sqlite)?;
    }
    while version < SCHEMA_VERSION {
        let step = MIGRATIONS[(version - 1) as usize];
        let transaction = connection.transaction().map_err(sqlite)?;
        transaction.execute_batch(step).map_err(sqlite)?;
        version += 1;
        transaction
            .pragma_update(None, "user_version", version)
            .map_err(sqlite)?;
        transaction.commit().map_err(sqlite)?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database at `path`, readable by the user only.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut connection = Connection::open(path).map_err(sqlite)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
            )
            .map_err(sqlite)?;
        migrate(&mut connection, path)?;
        Ok(Store {
            connection,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    // ---- RayServices ----

    /// Inserts or replaces a RayService.
    pub fn put_service(&self, record: &ServiceRecord) -> Result<(), StoreError> {
        self.connection
            .execute(
                "INSERT INTO rayservices (name, object, resolved_spec, status, deleting) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET object = ?2, resolved_spec = ?3, status = ?4, deleting = ?5",
                params![
                    record.name,
                    record.object.to_string(),
                    record.resolved_spec.to_string(),
                    record.status.to_string(),
                    record.deleting
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Writes only the status of a RayService.
    pub fn put_service_status(
        &self,
        name: &str,
        status: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.connection
            .execute(
                "UPDATE rayservices SET status = ?2 WHERE name = ?1",
                params![name, status.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// One RayService.
    pub fn service(&self, name: &str) -> Result<Option<ServiceRecord>, StoreError> {
        let row = self
            .connection
            .query_row(
                "SELECT name, object, resolved_spec, status, deleting FROM rayservices WHERE name = ?1",
                params![name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(service_from_row).transpose()
    }

    /// Every RayService, oldest first.
    pub fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT name, object, resolved_spec, status, deleting FROM rayservices ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(service_from_row).collect()
    }

    /// Removes a RayService and its events.
    pub fn remove_service(&self, name: &str) -> Result<(), StoreError> {
        self.connection
            .execute("DELETE FROM rayservices WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        self.connection
            .execute("DELETE FROM events WHERE object_name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    // ---- standalone RayClusters ----

    /// Inserts or replaces a RayCluster applied on its own (the object as applied, with
    /// metadata filled).
    pub fn put_raycluster(&self, name: &str, object: &serde_json::Value) -> Result<(), StoreError> {
        self.connection
            .execute(
                "INSERT INTO rayclusters (name, object) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET object = ?2",
                params![name, object.to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every RayCluster applied on its own, oldest first: `(name, object)`.
    pub fn rayclusters(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT name, object FROM rayclusters ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(name, object)| {
                let object = decode(&object, &format!("RayCluster {name}"))?;
                Ok((name, object))
            })
            .collect()
    }

    /// Removes a RayCluster applied on its own, and its events.
    pub fn remove_raycluster(&self, name: &str) -> Result<(), StoreError> {
        self.connection
            .execute("DELETE FROM rayclusters WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        self.connection
            .execute("DELETE FROM events WHERE object_name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    // ---- clusters ----

    /// Inserts or replaces a cluster.
    pub fn put_cluster(&self, record: &ClusterRecord) -> Result<(), StoreError> {
        let spec = serde_json::to_string(&record.spec).map_err(|source| StoreError::Decode {
            what: format!("cluster {} spec", record.name),
            source,
        })?;
        let memory =
            serde_json::to_string(&record.memory).map_err(|source| StoreError::Decode {
                what: format!("cluster {} memory", record.name),
                source,
            })?;
        self.connection
            .execute(
                "INSERT INTO clusters (name, service, spec, spec_hash, created_at, layout, memory)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(name) DO UPDATE SET spec = ?3, spec_hash = ?4, layout = ?6, memory = ?7",
                params![
                    record.name,
                    record.service,
                    spec,
                    record.memory.spec_hash,
                    record.created_at,
                    record.layout.to_string(),
                    memory,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every cluster, or those of one RayService, oldest first. A row that does not decode
    /// is an error naming the cluster, never an empty spec.
    pub fn clusters(&self, service: Option<&str>) -> Result<Vec<ClusterRecord>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT name, service, spec, spec_hash, created_at, delete_at, layout, submitted_config_hash, rejected_hash, rejected_message, memory
                 FROM clusters WHERE ?1 IS NULL OR service = ?1 ORDER BY created_at, rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map(params![service], |row| {
                Ok(StoredCluster {
                    name: row.get(0)?,
                    service: row.get(1)?,
                    spec: row.get(2)?,
                    spec_hash: row.get(3)?,
                    created_at: row.get(4)?,
                    delete_at: row.get(5)?,
                    layout: row.get(6)?,
                    submitted_config_hash: row.get(7)?,
                    rejected: row.get::<_, Option<String>>(8)?.zip(row.get(9)?),
                    memory: row.get(10)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(StoredCluster::decode).collect()
    }

    /// Removes a cluster and its nodes.
    pub fn remove_cluster(&self, name: &str) -> Result<(), StoreError> {
        self.connection
            .execute("DELETE FROM nodes WHERE cluster = ?1", params![name])
            .map_err(|e| self.err(e))?;
        self.connection
            .execute("DELETE FROM clusters WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    // ---- nodes ----

    /// Inserts or replaces a node.
    pub fn put_node(&self, record: &NodeRecord) -> Result<(), StoreError> {
        self.connection
            .execute(
                "INSERT INTO nodes (name, cluster, node_type, grp, pid, started_at, restarts, log_path, ports, identity)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(name) DO UPDATE SET pid = ?5, started_at = ?6, restarts = ?7, ports = ?9, identity = ?10",
                params![
                    record.name,
                    record.cluster,
                    record.node_type,
                    record.group,
                    record.pid,
                    record.started_at,
                    record.restarts,
                    record.log_path,
                    record.ports.to_string(),
                    record.identity
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Removes one node of a cluster.
    pub fn remove_node(&self, cluster: &str, name: &str) -> Result<(), StoreError> {
        self.connection
            .execute(
                "DELETE FROM nodes WHERE cluster = ?1 AND name = ?2",
                params![cluster, name],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every node, or those of one cluster.
    pub fn nodes(&self, cluster: Option<&str>) -> Result<Vec<NodeRecord>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT name, cluster, node_type, grp, pid, started_at, restarts, log_path, ports, identity FROM nodes
                 WHERE ?1 IS NULL OR cluster = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map(params![cluster], |row| {
                Ok((
                    NodeRecord {
                        name: row.get(0)?,
                        cluster: row.get(1)?,
                        node_type: row.get(2)?,
                        group: row.get(3)?,
                        pid: row.get(4)?,
                        started_at: row.get(5)?,
                        restarts: row.get(6)?,
                        log_path: row.get(7)?,
                        ports: serde_json::Value::Null,
                        identity: row.get(9)?,
                    },
                    row.get::<_, String>(8)?,
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|(mut node, ports)| {
                node.ports = decode(&ports, "node ports")?;
                Ok(node)
            })
            .collect()
    }

    // ---- events ----

    /// Records an event; the same reason and message as the object's last event only counts up.
    pub fn add_event(&self, event: &EventRecord) -> Result<(), StoreError> {
        let last: Option<(i64, String, String)> = self
            .connection
            .query_row(
                "SELECT id, reason, message FROM events WHERE object_name = ?1 ORDER BY id DESC LIMIT 1",
                params![event.object_name],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match last {
            Some((id, reason, message)) if reason == event.reason && message == event.message => {
                self.connection
                    .execute(
                        "UPDATE events SET count = count + 1, last_seen = ?2 WHERE id = ?1",
                        params![id, event.last_seen],
                    )
                    .map_err(|e| self.err(e))?;
            }
            _ => {
                self.connection
                    .execute(
                        "INSERT INTO events (object_kind, object_name, event_type, reason, message, count, first_seen, last_seen)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            event.object_kind,
                            event.object_name,
                            event.event_type,
                            event.reason,
                            event.message,
                            event.count,
                            event.first_seen,
                            event.last_seen
                        ],
                    )
                    .map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// The last `limit` events of an object, oldest first.
    pub fn events(&self, object_name: &str, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT object_kind, object_name, event_type, reason, message, count, first_seen, last_seen FROM events
                 WHERE object_name = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = statement
            .query_map(params![object_name, limit as i64], |row| {
                Ok(EventRecord {
                    object_kind: row.get(0)?,
                    object_name: row.get(1)?,
                    event_type: row.get(2)?,
                    reason: row.get(3)?,
                    message: row.get(4)?,
                    count: row.get(5)?,
                    first_seen: row.get(6)?,
                    last_seen: row.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.reverse();
        Ok(rows)
    }
}

type ServiceRow = (String, String, String, String, bool);

/// A `clusters` row as SQLite hands it over.
struct StoredCluster {
    name: String,
    service: String,
    spec: String,
    spec_hash: String,
    created_at: i64,
    delete_at: Option<i64>,
    layout: String,
    submitted_config_hash: Option<String>,
    rejected: Option<(String, String)>,
    memory: Option<String>,
}

impl StoredCluster {
    fn decode(self) -> Result<ClusterRecord, StoreError> {
        let what = |part: &str| format!("cluster {} {part}", self.name);
        let spec = serde_json::from_str(&self.spec).map_err(|source| StoreError::Decode {
            what: what("spec"),
            source,
        })?;
        let memory = match &self.memory {
            Some(text) => serde_json::from_str(text).map_err(|source| StoreError::Decode {
                what: what("memory"),
                source,
            })?,
            // Written by a version that kept the memory in separate columns.
            None => ClusterMemory {
                spec_hash: self.spec_hash.clone(),
                submitted_config_hash: self.submitted_config_hash.clone(),
                rejected_config: self
                    .rejected
                    .clone()
                    .map(|(hash, message)| rayservice_core::RejectedConfig { hash, message }),
                delete_at: self
                    .delete_at
                    .and_then(|at| k8s_openapi::jiff::Timestamp::from_second(at).ok()),
                ..Default::default()
            },
        };
        Ok(ClusterRecord {
            layout: decode(&self.layout, &what("layout"))?,
            name: self.name,
            service: self.service,
            spec,
            created_at: self.created_at,
            memory,
        })
    }
}

fn service_from_row(
    (name, object, resolved, status, deleting): ServiceRow,
) -> Result<ServiceRecord, StoreError> {
    Ok(ServiceRecord {
        object: decode(&object, &format!("RayService {name}"))?,
        resolved_spec: decode(&resolved, &format!("RayService {name} resolved spec"))?,
        status: decode(&status, &format!("RayService {name} status"))?,
        name,
        deleting,
    })
}

fn decode(text: &str, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Decode {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn services_round_trip() {
        let (_dir, store) = store();
        let record = ServiceRecord {
            name: "s".into(),
            object: json!({"metadata": {"name": "s"}}),
            resolved_spec: json!({}),
            status: json!({}),
            deleting: false,
        };
        store.put_service(&record).expect("put");
        assert_eq!(store.service("s").expect("get"), Some(record.clone()));
        store
            .put_service_status("s", &json!({"serviceStatus": "Running"}))
            .expect("status");
        assert_eq!(
            store.services().expect("list")[0].status["serviceStatus"],
            "Running"
        );
        store.remove_service("s").expect("remove");
        assert_eq!(store.service("s").expect("get"), None);
    }

    #[test]
    fn clusters_and_nodes_round_trip() {
        let (_dir, store) = store();
        let cluster = ClusterRecord {
            name: "s-raycluster-abcde".into(),
            service: "s".into(),
            spec: serde_json::from_value(json!({"rayVersion": "2.60.0"})).expect("spec"),
            created_at: 10,
            memory: ClusterMemory {
                spec_hash: "h".into(),
                submitted_config_hash: Some("c".into()),
                rejected_config: Some(rayservice_core::RejectedConfig {
                    hash: "x".into(),
                    message: "bad".into(),
                }),
                dashboard_answered: true,
                ..Default::default()
            },
            layout: json!({"gcs": 1}),
        };
        store.put_cluster(&cluster).expect("put");
        assert_eq!(
            store.clusters(Some("s")).expect("list"),
            vec![cluster.clone()]
        );
        assert!(store.clusters(Some("other")).expect("list").is_empty());
        let node = NodeRecord {
            name: "n".into(),
            cluster: cluster.name.clone(),
            node_type: "head".into(),
            group: "headgroup".into(),
            pid: Some(42),
            started_at: 11,
            restarts: 0,
            log_path: "/x".into(),
            ports: json!({}),
            identity: Some("boot:123".into()),
        };
        store.put_node(&node).expect("node");
        assert_eq!(store.nodes(Some(&cluster.name)).expect("nodes"), vec![node]);
        store.remove_cluster(&cluster.name).expect("remove");
        assert!(store.nodes(None).expect("nodes").is_empty());
    }

    #[test]
    fn a_corrupt_cluster_row_is_an_error_not_an_empty_spec() {
        let (_dir, store) = store();
        store
            .connection
            .execute(
                "INSERT INTO clusters (name, service, spec, spec_hash, created_at, layout) VALUES ('c', 's', '{\"headGroupSpec\": 7}', 'h', 1, '{}')",
                [],
            )
            .expect("insert");
        let error = store.clusters(None).expect_err("corrupt spec").to_string();
        assert!(error.contains("cluster c spec"), "{error}");
    }

    #[test]
    fn rows_of_the_older_layout_keep_their_memory() {
        let (_dir, store) = store();
        store
            .connection
            .execute(
                "INSERT INTO clusters (name, service, spec, spec_hash, created_at, delete_at, layout, submitted_config_hash, rejected_hash, rejected_message)
                 VALUES ('c', 's', '{}', 'h', 1, 1800000000, '{}', 'sub', 'rej', 'why')",
                [],
            )
            .expect("insert");
        let memory = &store.clusters(None).expect("clusters")[0].memory;
        assert_eq!(memory.spec_hash, "h");
        assert_eq!(memory.submitted_config_hash.as_deref(), Some("sub"));
        assert_eq!(
            memory.rejected_config.as_ref().map(|r| r.message.as_str()),
            Some("why")
        );
        assert_eq!(memory.delete_at.map(|t| t.as_second()), Some(1_800_000_000));
    }

    #[test]
    fn repeated_events_are_counted() {
        let (_dir, store) = store();
        let event = EventRecord {
            object_kind: "RayService".into(),
            object_name: "s".into(),
            event_type: "Normal".into(),
            reason: "R".into(),
            message: "m".into(),
            count: 1,
            first_seen: 1,
            last_seen: 1,
        };
        store.add_event(&event).expect("add");
        store
            .add_event(&EventRecord {
                last_seen: 5,
                ..event.clone()
            })
            .expect("add");
        store
            .add_event(&EventRecord {
                reason: "Other".into(),
                ..event.clone()
            })
            .expect("add");
        let events = store.events("s", 10).expect("events");
        assert_eq!(events.len(), 2);
        assert_eq!((events[0].count, events[0].last_seen), (2, 5));
        assert_eq!(events[1].reason, "Other");
    }

    #[test]
    fn an_older_database_is_upgraded_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        {
            // The tables as first released, with a row, and no schema version.
            let connection = Connection::open(&path).expect("open");
            connection.execute_batch(SCHEMA).expect("v1 tables");
            connection
                .execute(
                    "INSERT INTO nodes (name, cluster, node_type, grp, pid, started_at, log_path, ports) VALUES ('n', 'c', 'head', 'headgroup', 7, 1, '/x', '{}')",
                    [],
                )
                .expect("old row");
        }
        let store = Store::open(&path).expect("upgraded");
        let nodes = store.nodes(None).expect("old rows still read");
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].identity, None);
        let version: i64 = store
            .connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        drop(store);
        // Opening again changes nothing.
        drop(Store::open(&path).expect("reopen"));

        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("pretend a newer build wrote it");
        let err = Store::open(&path).err().expect("refused");
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
