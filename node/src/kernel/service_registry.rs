//! The registry of kernel services: objects a subcluster may ask for by
//! name at launch, some for system subclusters only. A service's kref
//! lasts across restarts, so baggage that held it gets it back.

use capstan_protocol::{Reference, Value};
use capstan_store::KrefKind;

use super::config::{self, KrefInfo};
use super::{Kernel, KernelError, ServiceOptions};

/// A registered service and who may ask for it.
pub(super) struct Service {
    pub(super) object: Value,
    pub(super) system_only: bool,
}

impl Kernel {
    /// Makes `object` callable from vats that ask for `name`. Replaces a
    /// service of that name; baggage that held the old one gets the new.
    pub fn register_kernel_service_object(
        &self,
        name: &str,
        object: Value,
        options: ServiceOptions,
    ) -> Result<(), KernelError> {
        if !matches!(object, Value::Remotable(_)) {
            return Err(KernelError::Failed(format!(
                "the kernel service {name:?} must be a remotable object"
            )));
        }
        if name.is_empty() || name.len() > 256 {
            return Err(KernelError::Failed(
                "a kernel service name must be 1 to 256 bytes".into(),
            ));
        }
        // A durable kref for the service is found again by name.
        let snapshot = self.store.read()?;
        let wanted = KrefInfo::Service { name: name.to_string() };
        for (kref, bytes) in snapshot.list_krefs()? {
            if kref.kind == KrefKind::Object
                && config::decode_record::<KrefInfo>(&bytes, "kref").ok().as_ref() == Some(&wanted)
            {
                self.unbind(kref);
                self.bind(kref, object.clone());
            }
        }
        self.services.borrow_mut().insert(
            name.to_string(),
            Service {
                object,
                system_only: options.system_only,
            },
        );
        Ok(())
    }

    pub(super) fn service_name_of(&self, reference: &Reference) -> Option<String> {
        self.services
            .borrow()
            .iter()
            .find(|(_, service)| matches!(&service.object, Value::Remotable(r) if r.identity() == reference.identity()))
            .map(|(name, _)| name.clone())
    }
}
