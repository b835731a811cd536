//! What the kernel reports about itself: its subclusters, its vats and
//! their states, the system subclusters' roots, and the node's remote
//! communications.

use capstan_protocol::{Value, record};
use capstan_store::{SubclusterId, VatId};

use super::config::SubclusterRecord;
use super::vats::Run;
use super::{Kernel, KernelError};

/// Orders ids like `s2` before `s10`.
fn ordinal(text: &str) -> (u64, String) {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    (digits.parse().unwrap_or(u64::MAX), text.to_string())
}

impl Kernel {
    fn subcluster_value(&self, id: &SubclusterId, record: &SubclusterRecord) -> Value {
        let vats = Value::record(
            record
                .vats
                .iter()
                .map(|(name, vat)| (name.as_str(), Value::from(vat.as_str()))),
        );
        record! {
            "id" => id.as_str(),
            "name" => record.name.as_deref().map_or(Value::Null, Value::from),
            "system" => record.name.is_some(),
            "bootstrap" => record.bootstrap.as_str(),
            "services" => Value::array(record.services.iter().map(|name| Value::from(name.as_str()))),
            "vats" => vats,
            "rootKref" => record.root.as_str(),
        }
    }

    /// Every subcluster, in id order.
    pub fn get_subclusters(&self) -> Value {
        let subclusters = self.subclusters.borrow();
        let mut ids: Vec<&SubclusterId> = subclusters.keys().collect();
        ids.sort_by_key(|id| ordinal(id.as_str()));
        Value::array(ids.into_iter().map(|id| self.subcluster_value(id, &subclusters[id])))
    }

    pub fn get_subcluster(&self, id: &str) -> Result<Value, KernelError> {
        let subclusters = self.subclusters.borrow();
        subclusters
            .iter()
            .find(|(known, _)| known.as_str() == id)
            .map(|(known, record)| self.subcluster_value(known, record))
            .ok_or_else(|| KernelError::NotFound(format!("there is no subcluster {id:?}")))
    }

    /// Vats, subclusters, the node's networking and the kernel promises.
    pub fn get_status(&self) -> Value {
        let vats = self.vats.borrow();
        let mut ids: Vec<&VatId> = vats.keys().collect();
        ids.sort_by_key(|id| ordinal(id.as_str()));
        let vats = Value::array(ids.into_iter().map(|id| {
            let vat = &vats[id];
            let state = match vat.run {
                Run::Running { .. } => "running",
                Run::Starting => "starting",
                Run::Stopped => "stopped",
            };
            record! {
                "id" => vat.id.as_str(),
                "name" => vat.record.name.as_str(),
                "subclusterId" => vat.record.subcluster.as_str(),
                "rootKref" => vat.record.root.as_str(),
                "pid" => vat.process.as_ref().and_then(|process| process.pid).map_or(Value::Null, |pid| Value::from(f64::from(pid))),
                "state" => state,
            }
        }));
        let comms = self
            .comms
            .borrow()
            .as_ref()
            .map_or_else(|| record! { "state" => "disconnected" }, |comms| comms());
        record! {
            "vats" => vats,
            "subclusters" => self.get_subclusters(),
            "remoteComms" => comms,
            "kernelPromises" => self.promise_counts(),
        }
    }

    /// The root kref of the system subcluster `name`.
    pub fn get_system_subcluster_root(&self, name: &str) -> Result<String, KernelError> {
        let id = self
            .system_subcluster_id(name)
            .ok_or_else(|| KernelError::NotFound(format!("there is no system subcluster named {name:?}")))?;
        Ok(self
            .subclusters
            .borrow()
            .get(&id)
            .map(|record| record.root.clone())
            .unwrap_or_default())
    }
}
