//! Launching a subcluster: checking everything first, reading the vats'
//! programs, recording the subcluster (marked unbootstrapped until it is
//! up), starting its vats and calling the bootstrap vat's `bootstrap`.

use std::collections::BTreeMap;

use capstan_protocol::{ErrorValue, Value, list};
use capstan_store::{BlobHash, KrefKind, SubclusterId, VatId};

use super::config::{self, ClusterConfig, KrefInfo, SubclusterRecord, VatRecord, VatSource};
use super::krefs::parse_kref;
use super::vats::Run;
use super::{Kernel, KernelError, LaunchResult, refs};
use crate::runtime::{E, reason_to_error, when};

impl Kernel {
    /// Launches a regular subcluster.
    pub async fn launch_subcluster(&self, config: ClusterConfig) -> Result<LaunchResult, KernelError> {
        self.launch(config, None).await
    }

    pub(super) async fn launch(
        &self,
        config: ClusterConfig,
        system_name: Option<String>,
    ) -> Result<LaunchResult, KernelError> {
        if self.stopped.get() {
            return Err(KernelError::Launch("the kernel is stopped".into()));
        }
        // Everything is checked before anything starts.
        {
            let services = self.services.borrow();
            for name in &config.services {
                match services.get(name) {
                    None => {
                        return Err(KernelError::Launch(format!("no kernel service named {name:?}")));
                    }
                    Some(service) if service.system_only && system_name.is_none() => {
                        return Err(KernelError::Launch(format!(
                            "the kernel service {name:?} is system-only; only system subclusters may use it"
                        )));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(name) = &system_name
            && self.system_subcluster_id(name).is_some()
        {
            return Err(KernelError::Launch(format!(
                "a system subcluster named {name:?} exists already"
            )));
        }
        let mut programs = Vec::with_capacity(config.vats.len());
        for (name, vat) in &config.vats {
            let source = self
                .load_source(&vat.source)
                .await
                .map_err(|error| KernelError::Launch(format!("vat {name:?}: {error}")))?;
            let parameters = refs::encode_plain(&vat.parameters)
                .map_err(|error| KernelError::Launch(format!("vat {name:?}: parameters {error}")))?;
            programs.push((
                name.clone(),
                source,
                parameters,
                vat.globals.clone(),
                vat.network.clone(),
            ));
        }

        // Ids and records first, marked unbootstrapped: a crash from here
        // on is cleaned up at the next start.
        let record_base = SubclusterRecord {
            name: system_name.clone(),
            bootstrap: config.bootstrap.clone(),
            services: config.services.clone(),
            vats: BTreeMap::new(),
            root: String::new(),
            bootstrapped: false,
            io: config.io.clone(),
        };
        let bootstrap_name = config.bootstrap.clone();
        let (subcluster_id, record, vat_records) = self
            .store
            .transact(move |tx| {
                let subcluster_id = tx.allocate_subcluster_id()?;
                let mut record = record_base;
                let mut vat_records = Vec::new();
                for (name, source, parameters, globals, network) in programs {
                    let vat_id = tx.allocate_vat_id()?;
                    let root = tx.allocate_kref(KrefKind::Object)?;
                    let info = KrefInfo::VatRoot {
                        vat: vat_id.to_string(),
                    };
                    tx.put_kref(root, &serde_json::to_vec(&info).unwrap_or_default())?;
                    let vat_record = VatRecord {
                        subcluster: subcluster_id.to_string(),
                        name: name.clone(),
                        source,
                        parameters,
                        root: root.to_string(),
                        globals,
                        network,
                    };
                    tx.put_vat_config(&vat_id, &serde_json::to_vec(&vat_record).unwrap_or_default())?;
                    if name == bootstrap_name {
                        record.root = root.to_string();
                    }
                    record.vats.insert(name, vat_id.to_string());
                    vat_records.push((vat_id, vat_record));
                }
                tx.put_subcluster(&subcluster_id, &serde_json::to_vec(&record).unwrap_or_default())?;
                Ok((subcluster_id, record, vat_records))
            })
            .await?;
        self.subclusters
            .borrow_mut()
            .insert(subcluster_id.clone(), record.clone());
        for (vat_id, vat_record) in vat_records {
            self.add_live_vat(vat_id, vat_record)?;
        }

        match self.boot(&subcluster_id, &record).await {
            Ok(bootstrap_result) => {
                let mut record = record;
                record.bootstrapped = true;
                let bytes = config::encode_record(&record)?;
                let id = subcluster_id.clone();
                self.store.transact(move |tx| tx.put_subcluster(&id, &bytes)).await?;
                self.subclusters
                    .borrow_mut()
                    .insert(subcluster_id.clone(), record.clone());
                tracing::info!(subcluster = %subcluster_id, vats = record.vats.len(), "subcluster launched");
                Ok(LaunchResult {
                    subcluster_id: subcluster_id.to_string(),
                    root_kref: record.root,
                    bootstrap_result,
                })
            }
            Err(error) => {
                let reason = format!("its launch failed: {}", error.message);
                if let Err(cleanup) = self.remove_subcluster(&subcluster_id, &reason).await {
                    tracing::error!(subcluster = %subcluster_id, error = %cleanup, "cleaning up a failed launch failed");
                }
                Err(KernelError::Launch(error.message.to_string()))
            }
        }
    }

    /// Starts a new subcluster's vats and calls `bootstrap`.
    async fn boot(&self, subcluster_id: &SubclusterId, record: &SubclusterRecord) -> Result<Value, ErrorValue> {
        self.open_io(subcluster_id, &record.io)?;
        let mut starting = Vec::with_capacity(record.vats.len());
        for (name, vat_id) in &record.vats {
            let vat_id: VatId = vat_id.parse()?;
            starting.push((name.clone(), self.vat.spawn(self.rc().incarnate(vat_id))));
        }
        let mut failure = None;
        for (name, task) in starting {
            let outcome = task
                .await
                .unwrap_or_else(|error| Err(ErrorValue::plain(format!("the start was cancelled: {error}"))));
            if let Err(error) = outcome
                && failure.is_none()
            {
                failure = Some(ErrorValue::plain(format!("vat {name:?}: {}", error.message)));
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        let mut vats = Vec::with_capacity(record.vats.len());
        let mut bootstrap_root = None;
        for (name, vat_id) in &record.vats {
            let vat_id: VatId = vat_id.parse()?;
            let live = self.vats.borrow();
            let Some(vat) = live.get(&vat_id) else {
                return Err(ErrorValue::plain(format!("vat {vat_id} went away during the launch")));
            };
            let root_kref = parse_kref(&vat.record.root)?;
            let proxy = self
                .bindings
                .borrow()
                .get(&root_kref)
                .cloned()
                .unwrap_or(Value::Undefined);
            if *name == record.bootstrap
                && let Run::Running { root } = &vat.run
            {
                bootstrap_root = Some(root.clone());
            }
            vats.push((name.as_str(), proxy));
        }
        let services = {
            let registered = self.services.borrow();
            record
                .services
                .iter()
                .filter_map(|name| {
                    registered
                        .get(name)
                        .map(|service| (name.as_str(), service.object.clone()))
                })
                .collect::<Vec<_>>()
        };
        let io = self.io_service(subcluster_id);
        let services: Vec<(&str, Value)> = services.into_iter().chain(io.map(|io| ("io", io))).collect();
        let Some(root) = bootstrap_root else {
            return Err(ErrorValue::plain(format!(
                "the bootstrap vat {:?} of {subcluster_id} is not running",
                record.bootstrap
            )));
        };
        // A bootstrap vat whose root has no `bootstrap` method needs none.
        if let Ok(Value::Array(names)) = when(&E(&root).call("__getMethodNames__", list![])).await
            && !names.iter().any(|name| name.as_str() == Some("bootstrap"))
        {
            return Ok(Value::Undefined);
        }
        let result = E(&root).call("bootstrap", list![Value::record(vats), Value::record(services)]);
        when(&result).await.map_err(|reason| {
            ErrorValue::plain(format!(
                "bootstrap() of vat {:?} failed: {}",
                record.bootstrap,
                reason_to_error(reason).message
            ))
        })
    }

    async fn load_source(&self, source: &VatSource) -> Result<String, String> {
        match source {
            VatSource::BlobReference(blob) => {
                let size = when(&E(blob).call("size", list![]))
                    .await
                    .map_err(|reason| format!("cannot read the bundle: {}", reason_to_error(reason).message))?;
                if size
                    .as_number()
                    .is_none_or(|size| size > config::MAX_VAT_SOURCE_BYTES as f64)
                {
                    return Err(format!(
                        "the bundle is larger than {} bytes",
                        config::MAX_VAT_SOURCE_BYTES
                    ));
                }
                let text = when(&E(blob).call("text", list![]))
                    .await
                    .map_err(|reason| format!("cannot read the bundle: {}", reason_to_error(reason).message))?;
                text.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "the bundle's text is not a string".to_string())
            }
            VatSource::File(path) => {
                let metadata = std::fs::metadata(path)
                    .map_err(|error| format!("cannot read the vat program {}: {error}", path.display()))?;
                if metadata.len() > config::MAX_VAT_SOURCE_BYTES {
                    return Err(format!(
                        "the vat program {} is {} bytes; the limit is {}",
                        path.display(),
                        metadata.len(),
                        config::MAX_VAT_SOURCE_BYTES
                    ));
                }
                std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read the vat program {}: {error}", path.display()))
            }
            VatSource::Blob(hash) => {
                let hash: BlobHash = hash.parse().map_err(|_| format!("{hash:?} is not a blob hash"))?;
                let snapshot = self.store.read().map_err(|error| error.to_string())?;
                match snapshot.blob_len(hash).map_err(|error| error.to_string())? {
                    None => return Err(format!("no stored blob {}", hash.to_hex())),
                    Some(len) if len > config::MAX_VAT_SOURCE_BYTES => {
                        return Err(format!(
                            "the stored blob is {len} bytes; the limit is {}",
                            config::MAX_VAT_SOURCE_BYTES
                        ));
                    }
                    Some(_) => {}
                }
                let reader = snapshot
                    .open_blob(hash)
                    .map_err(|error| error.to_string())?
                    .ok_or_else(|| format!("no stored blob {}", hash.to_hex()))?;
                let bytes = reader.read_to_vec().map_err(|error| error.to_string())?;
                String::from_utf8(bytes).map_err(|_| "the stored vat program is not UTF-8 text".to_string())
            }
        }
    }
}
