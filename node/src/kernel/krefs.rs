//! Krefs: the kernel's names for objects. Each is bound to its live value
//! this run (a root proxy, a service, an ordinary object) and stored with
//! what it stands for, so after a restart it is found again or says why
//! it is gone. Callers reach objects by kref here.

use capstan_protocol::captp::RemoteTarget;
use capstan_protocol::{Reference, Value};
use capstan_store::{Kref, KrefKind};

use super::config::{self, KrefInfo};
use super::{Kernel, KernelError, failed, refs};
use crate::runtime::{Message, reason_to_error, when};

/// Parses a kref given by a caller.
pub fn parse_kref(text: &str) -> Result<Kref, KernelError> {
    text.parse()
        .map_err(|_| KernelError::NotFound(format!("{text:?} is not a kref (krefs look like ko12 or kp3)")))
}

impl Kernel {
    pub(super) fn bind(&self, kref: Kref, value: Value) {
        if let Value::Remotable(reference) | Value::Promise(reference) = &value {
            self.by_identity.borrow_mut().insert(reference.identity(), kref);
        }
        self.bindings.borrow_mut().insert(kref, value);
    }

    pub(super) fn unbind(&self, kref: Kref) {
        if let Some(Value::Remotable(reference) | Value::Promise(reference)) = self.bindings.borrow_mut().remove(&kref)
        {
            self.by_identity.borrow_mut().remove(&reference.identity());
        }
    }

    pub(crate) fn bind_new(&self, krefs: Vec<(Kref, Value)>) {
        for (kref, value) in krefs {
            self.bind(kref, value);
        }
    }

    /// The live value of `kref`: its binding this run, or what is left of
    /// it after a restart.
    pub(crate) fn value_of_kref(&self, kref: Kref) -> Result<Value, KernelError> {
        if let Some(value) = self.bindings.borrow().get(&kref) {
            return Ok(value.clone());
        }
        let snapshot = self.store.read()?;
        let Some(bytes) = snapshot.get_kref(kref)? else {
            return Err(KernelError::NotFound(format!("there is no kernel object {kref}")));
        };
        if let Some(url) = snapshot.redeemed_url(kref)? {
            return Ok(self.rebind_redeemed(kref, url));
        }
        drop(snapshot);
        let info: KrefInfo = config::decode_record(&bytes, &format!("kref {kref}"))?;
        let reason = match info {
            KrefInfo::Service { name } => {
                return Err(KernelError::NotFound(format!(
                    "{kref} is the kernel service {name:?}, which is not registered"
                )));
            }
            KrefInfo::VatRoot { vat } => format!("{kref} was the root of vat {vat}, which no longer exists"),
            KrefInfo::VatObject { vat } => format!(
                "{kref} was an ordinary (non-durable) object of vat {vat}; it did not survive the restart \
                 (only vat roots and kernel services do)"
            ),
            KrefInfo::Other if kref.kind == KrefKind::Promise => {
                format!("{kref} was a kernel promise of an earlier run; promises do not survive a restart")
            }
            KrefInfo::Other => {
                format!("{kref} was an ordinary (non-durable) reference; it did not survive the restart")
            }
            KrefInfo::Gone { reason } => format!("{kref} no longer exists: {reason}"),
        };
        let broken = refs::make_broken(&self.vat, kref, &reason);
        self.bind(kref, broken.clone());
        Ok(broken)
    }

    /// The kref a reference has, or what one made for it would stand for.
    pub(crate) fn kref_plan(&self, reference: &Reference) -> Result<Kref, KrefInfo> {
        if let Some(kref) = self.by_identity.borrow().get(&reference.identity()) {
            return Ok(*kref);
        }
        if let Some(name) = self.service_name_of(reference) {
            return Err(KrefInfo::Service { name });
        }
        if let Some(remote) = RemoteTarget::of(reference)
            && let Some(vat) = self.sessions.borrow().get(&remote.session())
        {
            return Err(KrefInfo::VatObject { vat: vat.to_string() });
        }
        Err(KrefInfo::Other)
    }

    /// The kref of a remotable, made (and stored) if it has none yet.
    pub async fn kref_of(&self, value: &Value) -> Result<Kref, KernelError> {
        let Value::Remotable(reference) = value else {
            return Err(KernelError::Failed(format!(
                "only remotable objects have krefs, not {}",
                capstan_protocol::quote::quote(value)
            )));
        };
        match self.kref_plan(reference) {
            Ok(kref) => Ok(kref),
            Err(info) => {
                let bytes = config::encode_record(&info)?;
                let kref = self
                    .store
                    .transact(move |tx| {
                        let kref = tx.allocate_kref(KrefKind::Object)?;
                        tx.put_kref(kref, &bytes)?;
                        Ok(kref)
                    })
                    .await?;
                self.bind(kref, value.clone());
                Ok(kref)
            }
        }
    }

    /// A reference to `kref` usable in messages.
    pub fn get_presence(&self, kref: &str) -> Result<Value, KernelError> {
        self.value_of_kref(parse_kref(kref)?)
    }

    /// Sends `method(args)` to `kref` and waits for the result.
    pub async fn queue_message(&self, kref: &str, method: &str, args: Vec<Value>) -> Result<Value, KernelError> {
        let target = self.get_presence(kref)?;
        let result = self.vat.send(
            &target,
            Message::Call {
                method: method.to_string(),
                args,
            },
        );
        when(&result).await.map_err(|reason| failed(reason_to_error(reason)))
    }
}
