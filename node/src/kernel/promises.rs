//! Kernel promises: a promise that crosses the kernel (the result of a
//! send the kernel makes without waiting) gets a `kp<N>` kref, so callers
//! can send to it before it settles (pipelining) and the kernel can count
//! and collect them. A kernel promise lasts for this run only: promises
//! cannot be kept in baggage, so none survives a restart.

use capstan_protocol::{Value, record};
use capstan_store::{Kref, KrefKind};

use super::config::{self, KrefInfo};
use super::{Kernel, KernelError};
use crate::runtime::Message;

/// Where a kernel promise stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PromiseState {
    Pending,
    Fulfilled,
    Rejected,
}

impl Kernel {
    /// Sends `method(args)` to `kref` without waiting, and answers the
    /// `kp` kref of its result: later sends may target it at once.
    pub async fn enqueue_message(&self, kref: &str, method: &str, args: Vec<Value>) -> Result<String, KernelError> {
        let target = self.get_presence(kref)?;
        let result = self.vat.send(
            &target,
            Message::Call {
                method: method.to_string(),
                args,
            },
        );
        Ok(self.promise_kref(result).await?.to_string())
    }

    /// The `kp` kref of a promise, made (and its number stored, so it is
    /// never reused) if it has none yet.
    pub(crate) async fn promise_kref(&self, promise: Value) -> Result<Kref, KernelError> {
        let Value::Promise(reference) = &promise else {
            return Err(KernelError::Failed(format!(
                "only promises get kp krefs, not {}",
                capstan_protocol::quote::quote(&promise)
            )));
        };
        if let Some(kref) = self.by_identity.borrow().get(&reference.identity()) {
            return Ok(*kref);
        }
        let info = config::encode_record(&KrefInfo::Other)?;
        let kref = self
            .store
            .transact(move |tx| {
                let kref = tx.allocate_kref(KrefKind::Promise)?;
                tx.put_kref(kref, &info)?;
                Ok(kref)
            })
            .await?;
        self.bind(kref, promise.clone());
        self.promises.borrow_mut().insert(kref, PromiseState::Pending);
        let settled = self.vat.when(&promise);
        let kernel = self.this.clone();
        self.vat.spawn(async move {
            let state = match settled.await {
                Ok(_) => PromiseState::Fulfilled,
                Err(_) => PromiseState::Rejected,
            };
            if let Some(kernel) = kernel.upgrade()
                && let Some(known) = kernel.promises.borrow_mut().get_mut(&kref)
            {
                *known = state;
            }
        });
        Ok(kref)
    }

    /// Whether kernel promise `kref` has settled; `None` if it is not a
    /// promise of this run.
    pub(super) fn promise_settled(&self, kref: Kref) -> Option<bool> {
        self.promises
            .borrow()
            .get(&kref)
            .map(|state| *state != PromiseState::Pending)
    }

    pub(super) fn forget_promise(&self, kref: Kref) {
        self.promises.borrow_mut().remove(&kref);
    }

    /// `{count, pending, fulfilled, rejected}` of this run's kernel
    /// promises (those not collected yet).
    pub(super) fn promise_counts(&self) -> Value {
        let promises = self.promises.borrow();
        let count = |wanted: PromiseState| promises.values().filter(|state| **state == wanted).count() as f64;
        record! {
            "count" => promises.len() as f64,
            "pending" => count(PromiseState::Pending),
            "fulfilled" => count(PromiseState::Fulfilled),
            "rejected" => count(PromiseState::Rejected),
        }
    }
}
