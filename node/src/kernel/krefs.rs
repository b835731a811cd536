//! Krefs: the kernel's names for objects. Each is bound to its live value
//! this run (a root proxy, a service, an ordinary object) and stored with
//! what it stands for, so after a restart it is found again or says why
//! it is gone. Callers reach objects by kref here.

use std::collections::{HashMap, HashSet};

use capstan_protocol::captp::RemoteTarget;
use capstan_protocol::{Reference, Value};
use capstan_store::{Kref, KrefKind};

use super::config::{self, KrefInfo};
use super::{Kernel, KernelError, refs};

/// The one key of a record that stands for a kref in the kref form of a
/// value (`{"@kref": "ko4"}`), as ocap-kernel's CLI writes it.
pub const KREF_KEY: &str = "@kref";

/// The record that stands for `kref` in the kref form of a value.
pub fn kref_record(kref: &str) -> Value {
    Value::record([(KREF_KEY, Value::from(kref))])
}

/// What a record of exactly one key, [`KREF_KEY`], names.
fn kref_named(value: &Value) -> Option<&Value> {
    let record = value.as_record()?;
    if record.len() == 1 { record.get(KREF_KEY) } else { None }
}

/// Calls `found` with each object and promise in `value`.
fn visit_references(value: &Value, found: &mut impl FnMut(&Value)) {
    match value {
        Value::Remotable(_) | Value::Promise(_) => found(value),
        Value::Array(items) => items.iter().for_each(|item| visit_references(item, found)),
        Value::Record(record) => record.values().for_each(|item| visit_references(item, found)),
        Value::Tagged(tagged) => visit_references(&tagged.payload, found),
        _ => {}
    }
}

/// `value` with each part for which `replace` answers a value replaced
/// by it (and the parts it leaves, `None`, looked into).
fn map_values<E>(value: &Value, replace: &mut impl FnMut(&Value) -> Result<Option<Value>, E>) -> Result<Value, E> {
    if let Some(replaced) = replace(value)? {
        return Ok(replaced);
    }
    Ok(match value {
        Value::Array(items) => Value::array(
            items
                .iter()
                .map(|item| map_values(item, replace))
                .collect::<Result<Vec<_>, E>>()?,
        ),
        Value::Record(record) => Value::record(
            record
                .iter()
                .map(|(name, item)| Ok((name.clone(), map_values(item, replace)?)))
                .collect::<Result<Vec<_>, E>>()?,
        ),
        Value::Tagged(tagged) => Value::tagged(tagged.tag.clone(), map_values(&tagged.payload, replace)?),
        other => other.clone(),
    })
}

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
        let reason = self.lost_reason(kref, &bytes)?;
        let broken = refs::make_broken(&self.vat, kref, &reason);
        self.bind(kref, broken.clone());
        Ok(broken)
    }

    /// Why `kref`, stored as `bytes` and not bound this run, reaches no
    /// live object (a service no longer registered is an error).
    fn lost_reason(&self, kref: Kref, bytes: &[u8]) -> Result<String, KernelError> {
        let info: KrefInfo = config::decode_record(bytes, &format!("kref {kref}"))?;
        Ok(match info {
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
        })
    }

    /// Why `kref`, a `kp` kref that is not a promise of this run, cannot
    /// be used as one.
    fn lost_promise_reason(&self, kref: Kref) -> Result<String, KernelError> {
        let Some(bytes) = self.store.read()?.get_kref(kref)? else {
            return Err(KernelError::NotFound(format!("there is no kernel object {kref}")));
        };
        self.lost_reason(kref, &bytes)
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
        if !matches!(value, Value::Remotable(_)) {
            return Err(KernelError::Failed(format!(
                "only remotable objects have krefs, not {}",
                capstan_protocol::quote::quote(value)
            )));
        }
        let krefs = self.krefs_for(std::slice::from_ref(value)).await?;
        krefs
            .first()
            .copied()
            .ok_or_else(|| KernelError::Failed("no kref was made for the object".to_string()))
    }

    /// The krefs of `references` (remotables get `ko` krefs, promises `kp`
    /// krefs), those that have none made in one commit. A new kernel
    /// promise is counted and watched until it settles.
    pub(crate) async fn krefs_for(&self, references: &[Value]) -> Result<Vec<Kref>, KernelError> {
        let mut known: Vec<Option<Kref>> = Vec::with_capacity(references.len());
        let mut to_make: Vec<(KrefKind, Vec<u8>)> = Vec::new();
        for value in references {
            let plan = match value {
                Value::Remotable(reference) => self.kref_plan(reference).map_err(|info| (KrefKind::Object, info)),
                Value::Promise(reference) => match self.by_identity.borrow().get(&reference.identity()) {
                    Some(kref) => Ok(*kref),
                    None => Err((KrefKind::Promise, KrefInfo::Other)),
                },
                other => {
                    return Err(KernelError::Failed(format!(
                        "only objects and promises get krefs, not {}",
                        capstan_protocol::quote::quote(other)
                    )));
                }
            };
            match plan {
                Ok(kref) => known.push(Some(kref)),
                Err((kind, info)) => {
                    known.push(None);
                    to_make.push((kind, config::encode_record(&info)?));
                }
            }
        }
        let made = if to_make.is_empty() {
            Vec::new()
        } else {
            self.store
                .transact(move |tx| {
                    let mut made = Vec::with_capacity(to_make.len());
                    for (kind, info) in to_make {
                        let kref = tx.allocate_kref(kind)?;
                        tx.put_kref(kref, &info)?;
                        made.push(kref);
                    }
                    Ok(made)
                })
                .await?
        };
        let mut made = made.into_iter();
        let mut krefs = Vec::with_capacity(references.len());
        for (value, known) in references.iter().zip(known) {
            if let Some(kref) = known {
                krefs.push(kref);
                continue;
            }
            let Some(kref) = made.next() else {
                return Err(KernelError::Failed("the store made too few krefs".to_string()));
            };
            let identity = match value {
                Value::Remotable(reference) | Value::Promise(reference) => reference.identity(),
                _ => continue,
            };
            // Another task may have given it one while this one waited.
            let earlier = self.by_identity.borrow().get(&identity).copied();
            match earlier {
                Some(earlier) => krefs.push(earlier),
                None => {
                    self.bind(kref, value.clone());
                    if kref.kind == KrefKind::Promise {
                        self.watch_promise(kref, value);
                    }
                    krefs.push(kref);
                }
            }
        }
        Ok(krefs)
    }

    /// `value` as a caller outside the kernel sees it (the *kref form*):
    /// each object and promise in it given its kref (made if it has none)
    /// and replaced by the record `{"@kref": kref}`.
    pub async fn krefs_in(&self, value: &Value) -> Result<Value, KernelError> {
        let mut references: Vec<Value> = Vec::new();
        let mut seen: HashSet<usize> = HashSet::new();
        visit_references(value, &mut |reference| {
            if let Value::Remotable(inner) | Value::Promise(inner) = reference
                && seen.insert(inner.identity())
            {
                references.push(reference.clone());
            }
        });
        if references.is_empty() {
            return Ok(value.clone());
        }
        let krefs = self.krefs_for(&references).await?;
        let by_identity: HashMap<usize, Kref> = references
            .iter()
            .zip(krefs)
            .filter_map(|(reference, kref)| match reference {
                Value::Remotable(inner) | Value::Promise(inner) => Some((inner.identity(), kref)),
                _ => None,
            })
            .collect();
        map_values(value, &mut |each| match each {
            Value::Remotable(inner) | Value::Promise(inner) => Ok::<_, KernelError>(
                by_identity
                    .get(&inner.identity())
                    .map(|kref| kref_record(&kref.to_string())),
            ),
            _ => Ok(None),
        })
    }

    /// `value` in kref form (from a caller outside the kernel) made live:
    /// each record `{"@kref": kref}` replaced by what the kref names. A
    /// `kp` kref gives the kernel promise itself while it is pending, and
    /// what it settled to after; it must be a promise of this run.
    pub fn from_krefs(&self, value: &Value) -> Result<Value, KernelError> {
        map_values(value, &mut |each| {
            let Some(named) = kref_named(each) else {
                return Ok(None);
            };
            let Value::String(text) = named else {
                return Err(KernelError::Failed(format!(
                    "an {KREF_KEY:?} record must name a kref as a string, like {{\"{KREF_KEY}\": \"ko4\"}}, not {}",
                    capstan_protocol::quote::quote(named)
                )));
            };
            let kref = parse_kref(text)?;
            if kref.kind == KrefKind::Object {
                return self.value_of_kref(kref).map(Some);
            }
            match self.promise_to_pass(kref) {
                Some(value) => Ok(Some(value)),
                None => Err(KernelError::Failed(self.lost_promise_reason(kref)?)),
            }
        })
    }

    /// A reference to `kref` usable in messages.
    pub fn get_presence(&self, kref: &str) -> Result<Value, KernelError> {
        self.value_of_kref(parse_kref(kref)?)
    }
}
