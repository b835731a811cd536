//! Revocation: a revoked kref stays revoked for good, and the delivery
//! gate on the node's vat refuses every delivery to it, from a vat, the
//! CLI or a peer.

use capstan_protocol::{ErrorValue, Reference, Value};
use capstan_store::Kref;

use super::krefs::parse_kref;
use super::{Kernel, KernelError};

/// The rejection every send to a revoked object gets.
pub fn revoked_error(kref: Kref) -> Value {
    Value::error(ErrorValue::plain(format!(
        "{kref} was revoked: no message can reach it any more"
    )))
}

impl Kernel {
    pub(super) fn revocation_of(&self, reference: &Reference) -> Option<Value> {
        let revoked = self.revoked.borrow();
        if revoked.is_empty() {
            return None;
        }
        let kref = *self.by_identity.borrow().get(&reference.identity())?;
        revoked.contains(&kref).then(|| revoked_error(kref))
    }

    /// Revokes `kref` for good: every later send to it fails. `false` if
    /// it was revoked already.
    pub async fn revoke(&self, kref: &str) -> Result<bool, KernelError> {
        let kref = parse_kref(kref)?;
        if self.store.read()?.get_kref(kref)?.is_none() {
            return Err(KernelError::NotFound(format!("there is no kernel object {kref}")));
        }
        let newly = self.store.transact(move |tx| tx.revoke(kref)).await?;
        self.revoked.borrow_mut().insert(kref);
        if newly {
            tracing::info!(%kref, "revoked");
        }
        Ok(newly)
    }

    pub fn is_revoked(&self, kref: &str) -> Result<bool, KernelError> {
        let kref = parse_kref(kref)?;
        Ok(self.revoked.borrow().contains(&kref))
    }
}
