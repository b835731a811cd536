//! The kernel's references: root proxies (one node object per vat root,
//! forwarding to the root of the vat's current incarnation), broken
//! references (what an object that did not survive is replaced with), and
//! the codec that keeps baggage values in the store with krefs in place of
//! references.

use std::rc::{Rc, Weak};

use capstan_protocol::smallcaps::{self, SlotKind};
use capstan_protocol::{ErrorValue, Reference, Value};
use capstan_store::{Kref, VatId};
use serde::{Deserialize, Serialize};

use super::{Kernel, KrefInfo};
use crate::runtime::{Behavior, Invocation, Message, Settlement, Vat, type_error};

/// How deep a stored value may nest.
const MAX_DEPTH: usize = 64;

struct RootProxy {
    kernel: Weak<Kernel>,
    vat: VatId,
    interface: String,
}

impl RootProxy {
    fn forward(&self, message: Message) -> Settlement {
        let Some(kernel) = self.kernel.upgrade() else {
            return Err(type_error("the kernel has stopped"));
        };
        let target = kernel.root_target(&self.vat)?;
        Ok(kernel.vat.send(&target, message))
    }
}

impl Behavior for RootProxy {
    fn interface(&self) -> &str {
        &self.interface
    }

    fn invoke(&self, _this: &Value, method: &str, args: Vec<Value>) -> Invocation {
        Invocation::Ready(self.forward(Message::Call {
            method: method.to_string(),
            args,
        }))
    }

    fn get(&self, _this: &Value, field: &str) -> Settlement {
        self.forward(Message::Get {
            field: field.to_string(),
        })
    }
}

/// The stand-in for the root of `vat`, known as `kref`.
pub(crate) fn make_root_proxy(kernel: &Kernel, kref: Kref, vat: VatId) -> Value {
    let interface = format!("Alleged: root of vat {vat} ({kref})");
    kernel.vat.make_object(Rc::new(RootProxy {
        kernel: kernel.this.clone(),
        vat,
        interface,
    }))
}

struct Broken {
    interface: String,
    reason: String,
}

impl Behavior for Broken {
    fn interface(&self) -> &str {
        &self.interface
    }

    fn invoke(&self, _this: &Value, method: &str, _args: Vec<Value>) -> Invocation {
        Invocation::Ready(Err(Value::error(ErrorValue::plain(format!(
            "Cannot call {method:?}: {}",
            self.reason
        )))))
    }

    fn get(&self, _this: &Value, field: &str) -> Settlement {
        Err(Value::error(ErrorValue::plain(format!(
            "Cannot get {field:?}: {}",
            self.reason
        ))))
    }
}

/// An object that refuses every message with `reason`.
pub(crate) fn make_broken(vat: &Vat, kref: Kref, reason: &str) -> Value {
    vat.make_object(Rc::new(Broken {
        interface: format!("Alleged: broken {kref}"),
        reason: reason.to_string(),
    }))
}

/// Plain data (no references) as smallcaps.
pub(crate) fn encode_plain(value: &Value) -> Result<String, String> {
    let mut has_reference = false;
    let body = smallcaps::encode(value, |_, _| {
        has_reference = true;
        0
    });
    if has_reference {
        return Err("must be plain data, without references".to_string());
    }
    Ok(body)
}

pub(crate) fn decode_plain(body: &str) -> Result<Value, String> {
    smallcaps::decode(body, MAX_DEPTH, |_| Err("plain data has no references".to_string()))
        .map_err(|error| error.to_string())
}

/// A baggage value as stored: a smallcaps body whose slots are krefs.
#[derive(Serialize, Deserialize)]
struct StoredValue {
    body: String,
    slots: Vec<String>,
}

/// A slot of a value about to be stored: a kref it has, or one to make.
pub(crate) enum SlotPlan {
    Known(Kref),
    New(KrefInfo, Value),
}

/// Plans how to store `value`: its body and, for each slot, its kref or
/// the kref to make for it. Promises cannot be stored.
pub(crate) fn plan_baggage(kernel: &Kernel, value: &Value) -> Result<(String, Vec<SlotPlan>), String> {
    let mut slots: Vec<(Reference, SlotPlan)> = Vec::new();
    let mut promise = false;
    let body = smallcaps::encode(value, |reference, kind| {
        if kind == SlotKind::Promise {
            promise = true;
            return 0;
        }
        if let Some(index) = slots.iter().position(|(known, _)| known.same(reference)) {
            return index;
        }
        let plan = match kernel.kref_plan(reference) {
            Ok(kref) => SlotPlan::Known(kref),
            Err(info) => SlotPlan::New(info, Value::Remotable(reference.clone())),
        };
        slots.push((reference.clone(), plan));
        slots.len() - 1
    });
    if promise {
        return Err("promises cannot be kept in baggage".to_string());
    }
    Ok((body, slots.into_iter().map(|(_, plan)| plan).collect()))
}

/// The stored bytes of a planned value, once its krefs are known.
pub(crate) fn stored_bytes(body: String, krefs: &[Kref]) -> Vec<u8> {
    let stored = StoredValue {
        body,
        slots: krefs.iter().map(ToString::to_string).collect(),
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// The krefs a stored baggage value holds.
pub(crate) fn baggage_slots(bytes: &[u8]) -> Result<Vec<Kref>, String> {
    let stored: StoredValue = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    stored
        .slots
        .iter()
        .map(|slot| super::parse_kref(slot).map_err(|error| error.to_string()))
        .collect()
}

/// A stored baggage value with each kref replaced by its live value.
pub(crate) fn decode_baggage(kernel: &Kernel, bytes: &[u8]) -> Result<Value, String> {
    let stored: StoredValue = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    let mut references = Vec::with_capacity(stored.slots.len());
    for slot in &stored.slots {
        let kref = super::parse_kref(slot).map_err(|error| error.to_string())?;
        match kernel.value_of_kref(kref) {
            Ok(Value::Remotable(reference)) => references.push(Some(reference)),
            Ok(_) => references.push(None),
            Err(error) => {
                // A service that is no longer registered: the slot breaks.
                let broken = make_broken(&kernel.vat, kref, &error.to_string());
                let Value::Remotable(reference) = broken else {
                    return Err("a broken reference is not remotable".to_string());
                };
                references.push(Some(reference));
            }
        }
    }
    smallcaps::decode(&stored.body, MAX_DEPTH, |slot| {
        references
            .get(slot.index)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("slot {} has no reference", slot.index))
    })
    .map_err(|error| error.to_string())
}
