//! Making the value of a formula ("incarnation"): one arm per formula
//! type, each handing off to the module that owns that kind of value.
//! Kept apart from [`super::Daemon`] so the daemon's state does not depend
//! on every kind of value; [`super::Daemon::provide`] calls it once per
//! formula, remembers the value and what it was made from.

use std::rc::Rc;

use capstan_protocol::{ErrorValue, Value, list};
use capstan_store::FormulaId;

use super::formula::{Formula, Id};
use super::{Daemon, agents, blob, control, directory, peers};
use crate::runtime::reason_to_error;
use crate::runtime::{E, when};

/// Makes the value of formula `id`.
pub(super) async fn incarnate(daemon: &Rc<Daemon>, id: FormulaId) -> Result<Value, ErrorValue> {
    if id.node() != daemon.node_id {
        return peers::provide_remote(daemon, id).await;
    }
    let formula = daemon.formula(id)?;
    for dependency in formula.made_from() {
        let dependency = dependency.get()?;
        daemon.note_dependency(dependency, id);
    }
    let get = |id: &Id| id.get().map_err(ErrorValue::from);
    match formula {
        Formula::Endo { .. } => Ok(control::make_endo_object(daemon)),
        Formula::Host { .. } => agents::host::make_host(daemon, id),
        Formula::Guest { .. } => agents::guest::make_guest(daemon, id),
        Formula::Handle { agent } => agents::host::make_handle(daemon, get(&agent)?),
        Formula::Worker => daemon.workers.start(daemon, id).await,
        Formula::Eval {
            worker,
            source,
            names,
            values,
        } => {
            let worker = daemon.provide_settled(get(&worker)?).await?;
            let mut endowments = Vec::with_capacity(values.len());
            for value in &values {
                endowments.push(daemon.provide_settled(get(value)?).await?);
            }
            let names = Value::array(names.iter().map(|name| Value::from(name.as_str())));
            let result = E(&worker).call("evaluate", list![source, names, Value::array(endowments)]);
            when(&result).await.map_err(reason_to_error)
        }
        Formula::Lookup { hub, path } => {
            let hub = daemon.provide_settled(get(&hub)?).await?;
            let path = Value::array(path.iter().map(|name| Value::from(name.as_str())));
            when(&E(&hub).call("lookup", path)).await.map_err(reason_to_error)
        }
        Formula::MakeUnconfined {
            worker,
            powers,
            specifier,
        } => {
            let worker = daemon.provide_settled(get(&worker)?).await?;
            let powers = daemon.provide_settled(get(&powers)?).await?;
            let result = E(&worker).call("makeUnconfined", list![specifier, powers]);
            when(&result).await.map_err(reason_to_error)
        }
        Formula::MakeBundle { worker, powers, bundle } => {
            let worker = daemon.provide_settled(get(&worker)?).await?;
            let powers = daemon.provide_settled(get(&powers)?).await?;
            let bundle = daemon.provide_settled(get(&bundle)?).await?;
            let source = when(&E(&bundle).call("text", list![])).await.map_err(reason_to_error)?;
            let result = E(&worker).call("makeBundle", list![source, powers]);
            when(&result).await.map_err(reason_to_error)
        }
        Formula::ReadableBlob { hash } => blob::make_readable_blob(daemon, &hash),
        Formula::Marshal { body, slots } => {
            let mut values = Vec::with_capacity(slots.len());
            for slot in &slots {
                values.push(daemon.provide_settled(get(slot)?).await?);
            }
            capstan_protocol::smallcaps::decode(&body, 64, |slot| match values.get(slot.index) {
                Some(Value::Remotable(reference)) | Some(Value::Promise(reference)) => Ok(reference.clone()),
                _ => Err("a stored value's slot is not a reference".to_string()),
            })
            .map_err(|error| ErrorValue::plain(format!("a stored value is damaged: {error}")))
        }
        Formula::PetStore => directory::make_directory(daemon, id, false),
        Formula::Directory { pet_store } => directory::make_directory(daemon, get(&pet_store)?, false),
        Formula::ConfinedDirectory { pet_store } => directory::make_directory(daemon, get(&pet_store)?, true),
        Formula::LeastAuthority => Ok(agents::host::make_least_authority(daemon)),
        Formula::Kernel => Ok(daemon.kernel.facet()),
        Formula::Invitation { .. } => Err(ErrorValue::plain(
            "an invitation is used by accepting its locator on another node",
        )),
    }
}
