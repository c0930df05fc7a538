//! Events as `kubectl describe` lists them (`core/v1` Event objects).
//!
//! kube-runtime's `Recorder` groups events into a series by reason alone, so two events with
//! the same reason and different messages (`ClusterCreated` for the first cluster, then for the
//! upgrade's) show as one, with the first message. The operator's messages carry the facts
//! (which cluster, which field), so each distinct message is its own event here; an identical
//! repeat bumps the count of the event it repeats, as kubectl's `(x3 over 2m)` shows.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use rayservice_core::EventKind;

/// Longest message Kubernetes keeps (1 kB).
const MESSAGE_LIMIT: usize = 1024;
/// How many distinct events are remembered for counting repeats.
const REMEMBERED: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    kind: String,
    reason: String,
    message: String,
}

/// Writes events for objects; failures are logged, never fatal.
pub struct Events {
    client: Client,
    component: String,
    seen: Mutex<HashMap<Key, (String, i32)>>,
}

/// Cuts a message to what the API server keeps, on a character boundary.
pub fn shorten(message: &str) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message.to_string();
    }
    let mut end = MESSAGE_LIMIT - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

impl Events {
    /// Events reported by `component` (shown as `From` by kubectl).
    pub fn new(client: Client, component: &str) -> Self {
        Events {
            client,
            component: component.to_string(),
            seen: Mutex::default(),
        }
    }

    /// Records an event about `object` (Normal or Warning).
    pub async fn publish<K>(&self, object: &K, kind: EventKind, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        if let Err(error) = self.try_publish(object, kind, reason, message).await {
            tracing::warn!(object = %object.name_any(), reason, %error, "could not record an event");
        }
    }

    async fn try_publish<K>(
        &self,
        object: &K,
        kind: EventKind,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()>,
    {
        let namespace = object.namespace().unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let message = shorten(message);
        let key = Key {
            uid: object.uid().unwrap_or_default(),
            kind: kind.to_string(),
            reason: reason.to_string(),
            message: message.clone(),
        };
        let now = Timestamp::now();
        let repeat = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({
                "count": count + 1,
                "lastTimestamp": Time(now),
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.remember(key, name, count + 1);
                    return Ok(());
                }
                // Expired or removed: write a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            object.name_any(),
            now.as_nanosecond().unsigned_abs()
        );
        let reference: ObjectReference = object.object_ref(&());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: reference,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(kind.to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.remember(key, name, 1);
        Ok(())
    }

    fn remember(&self, key: Key, name: String, count: i32) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= REMEMBERED && !seen.contains_key(&key) {
            seen.clear();
        }
        seen.insert(key, (name, count));
    }
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let short = shorten(&long);
        assert!(short.len() <= 1024);
        assert!(short.ends_with("..."));
        assert_eq!(shorten("fine"), "fine");
    }
}
