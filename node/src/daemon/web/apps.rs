//! Which web apps the node has, and what each grants: an app is a stored
//! record in the host's names (a `marshal` formula, so it is listed,
//! removed, collected and kept across restarts like any named value):
//!
//! ```text
//! { capstanWebApp: 1, token: "<64 hex digits>", powers: <agent>, files: <blob> }
//! ```
//!
//! `token` is what the app's URL carries, `powers` the agent its page gets,
//! `files` the blob of its packed files (see [`super::bundle`]). `capstan
//! install` makes the record with the host's own methods; this module only
//! reads it. An app is found by token on every request, and only while the
//! host's names still name its record, so removing the name ends the app
//! at once.
//!
//! Each app has its own browser origin, `http://<label>.localhost:<port>`,
//! so apps share no storage, cookies or windows. The label is a one-way
//! digest of the token ([`origin_label`]): an origin is public (browsers
//! send it to other sites), the token is not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use capstan_protocol::{Reference, Value};
use capstan_store::{BlobHash, FormulaId};

use super::bundle::AppFiles;
use crate::daemon::Daemon;
use crate::daemon::formula::Formula;

/// The property that marks a stored record as a web app, and its version.
pub const APP_MARKER: &str = "capstanWebApp";

/// Hex digits of an app token.
pub const TOKEN_HEX_DIGITS: usize = 64;

/// Hex digits of an app's origin label (96 bits: apps never share one).
pub const LABEL_HEX_DIGITS: usize = 24;

/// The host label of the app whose token is `token`: its origin is
/// `http://<label>.localhost:<port>`. Derived, so every existing app has
/// one and the token cannot be read back from it.
pub fn origin_label(token: &str) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("capstan web app origin label v1");
    hasher.update(token.as_bytes());
    let digest = hasher.finalize();
    digest.as_bytes()[..LABEL_HEX_DIGITS / 2]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether `text` is spelled like an origin label.
pub fn label_shaped(text: &str) -> bool {
    text.len() == LABEL_HEX_DIGITS && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An app, as its record says.
#[derive(Clone, Debug)]
pub struct App {
    pub token: String,
    pub powers: FormulaId,
    pub files: BlobHash,
}

/// The slot index a decoded reference stands for.
struct SlotIndex(usize);

/// Reads formula `id` as an app record, if it is one.
fn read_app(daemon: &Daemon, id: FormulaId) -> Option<App> {
    let Ok(Formula::Marshal { body, slots }) = daemon.formula(id) else {
        return None;
    };
    let value = capstan_protocol::smallcaps::decode(&body, 4, |slot| {
        Ok(Reference::new("Alleged: slot", SlotIndex(slot.index)))
    })
    .ok()?;
    let record = value.as_record()?;
    if record.get(APP_MARKER).and_then(Value::as_number) != Some(1.0) {
        return None;
    }
    let slot = |name: &str| -> Option<FormulaId> {
        let Value::Remotable(reference) = record.get(name)? else {
            return None;
        };
        slots.get(reference.target::<SlotIndex>()?.0)?.get().ok()
    };
    let token = record.get("token")?.as_str()?.to_string();
    let powers = slot("powers")?;
    let Ok(Formula::ReadableBlob { hash }) = daemon.formula(slot("files")?) else {
        return None;
    };
    Some(App {
        token,
        powers,
        files: hash.parse().ok()?,
    })
}

/// Compares in time independent of where the texts differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `text` is spelled like a token (so others are refused before
/// any lookup).
pub fn token_shaped(text: &str) -> bool {
    text.len() == TOKEN_HEX_DIGITS && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Finds apps and keeps their unpacked files.
#[derive(Default)]
pub struct Apps {
    /// The app records last seen in the host's names, by token; checked
    /// against the names on every use, and read again on a miss.
    by_token: RefCell<HashMap<String, FormulaId>>,
    /// Unpacked files by blob: blobs are immutable, so this never goes
    /// stale; it is emptied when it grows past a few apps.
    files: RefCell<HashMap<BlobHash, Rc<AppFiles>>>,
}

/// Unpacked apps kept in memory at most.
const CACHED_APPS: usize = 16;

impl Apps {
    /// The app named in the host's names whose token is `token`.
    pub fn find(&self, daemon: &Daemon, token: &str) -> Option<App> {
        if !token_shaped(token) {
            return None;
        }
        let snapshot = daemon.store.read().ok()?;
        let host_names = daemon.roots.host_pet_store;
        let known = self.by_token.borrow().get(token).copied();
        if let Some(id) = known {
            let still_named = snapshot
                .reverse_lookup_in(host_names, id)
                .is_ok_and(|names| !names.is_empty());
            if still_named && let Some(app) = read_app(daemon, id).filter(|app| same_token(&app.token, token)) {
                return Some(app);
            }
        }
        // A miss (a new app, a removed one, or a wrong token): read the
        // host's names again.
        let mut found = None;
        let mut by_token = HashMap::new();
        for (_, id) in snapshot.list_names(host_names).ok()? {
            if let Some(app) = read_app(daemon, id) {
                if same_token(&app.token, token) {
                    found = Some(app.clone());
                }
                by_token.insert(app.token, id);
            }
        }
        *self.by_token.borrow_mut() = by_token;
        found
    }

    /// The app's files, read from the store on first use.
    pub fn files(&self, daemon: &Daemon, app: &App) -> Result<Rc<AppFiles>, String> {
        if let Some(files) = self.files.borrow().get(&app.files) {
            return Ok(Rc::clone(files));
        }
        let packed = daemon
            .store
            .read()
            .and_then(|snapshot| snapshot.open_blob(app.files))
            .map_err(|error| error.to_string())?
            .ok_or("the app's files are missing from the store")?
            .read_to_vec()
            .map_err(|error| error.to_string())?;
        let files = Rc::new(AppFiles::unpack(&packed).map_err(|error| error.to_string())?);
        let mut cache = self.files.borrow_mut();
        if cache.len() >= CACHED_APPS {
            cache.clear();
        }
        cache.insert(app.files, Rc::clone(&files));
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_must_be_lower_hex() {
        let token = "a".repeat(TOKEN_HEX_DIGITS);
        assert!(token_shaped(&token));
        assert!(same_token(&token, &token));
        assert!(!same_token(&token, &"b".repeat(TOKEN_HEX_DIGITS)));
        assert!(!token_shaped(&"A".repeat(TOKEN_HEX_DIGITS)));
        assert!(!token_shaped("abc"));
    }

    #[test]
    fn each_token_has_its_own_label_which_does_not_show_the_token() {
        let first = "a".repeat(TOKEN_HEX_DIGITS);
        let second = "b".repeat(TOKEN_HEX_DIGITS);
        let label = origin_label(&first);
        assert!(label_shaped(&label), "{label}");
        assert_eq!(label, origin_label(&first), "stable");
        assert_ne!(label, origin_label(&second));
        assert!(!first.contains(&label));
        assert!(!label_shaped("A".repeat(LABEL_HEX_DIGITS).as_str()));
    }
}
