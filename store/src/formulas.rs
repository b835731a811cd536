//! Formulas: formula id → a versioned record of the formula's type and its
//! body. The node owns the formula types and encodes the body (postcard);
//! the store keeps the bytes and the type name beside them.

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::ids::FormulaId;
use crate::schema::{FORMULAS, IdKey};
use crate::tx::{Snapshot, Tx};
use crate::{Commit, Store};

/// The version of the stored formula record's layout.
const FORMULA_RECORD_VERSION: u32 = 1;

/// One formula as stored: its type (such as `"eval"` or `"pet-store"`) and
/// its body, which the node encodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormulaRecord {
    pub formula_type: String,
    pub body: Vec<u8>,
}

pub(crate) fn encode_formula(record: &FormulaRecord) -> Result<Vec<u8>> {
    postcard::to_allocvec(&(FORMULA_RECORD_VERSION, record)).map_err(|error| StoreError::Encode {
        what: "formula record",
        detail: error.to_string(),
    })
}

pub(crate) fn decode_formula(bytes: &[u8]) -> Result<FormulaRecord> {
    let corrupt = |detail: String| StoreError::CorruptRecord {
        table: "formulas",
        detail,
    };
    let (version, rest): (u32, &[u8]) = postcard::take_from_bytes(bytes).map_err(|error| corrupt(error.to_string()))?;
    if version != FORMULA_RECORD_VERSION {
        return Err(corrupt(format!(
            "formula record version {version} is not {FORMULA_RECORD_VERSION}"
        )));
    }
    postcard::from_bytes(rest).map_err(|error| corrupt(error.to_string()))
}

fn get_formula(formulas: &impl ReadableTable<IdKey, &'static [u8]>, id: FormulaId) -> Result<Option<FormulaRecord>> {
    formulas
        .get(id.to_key())?
        .map(|value| decode_formula(value.value()))
        .transpose()
}

impl Tx<'_> {
    /// Stores `record` under `id`, replacing what was there.
    pub fn put_formula(&mut self, id: FormulaId, record: &FormulaRecord) -> Result<()> {
        let encoded = encode_formula(record)?;
        self.tables.formulas.open()?.insert(id.to_key(), encoded.as_slice())?;
        Ok(())
    }

    /// Removes the formula; `false` if there was none.
    pub fn remove_formula(&mut self, id: FormulaId) -> Result<bool> {
        Ok(self.tables.formulas.open()?.remove(id.to_key())?.is_some())
    }

    pub fn get_formula(&mut self, id: FormulaId) -> Result<Option<FormulaRecord>> {
        get_formula(self.tables.formulas.open()?, id)
    }
}

impl Snapshot {
    pub fn get_formula(&self, id: FormulaId) -> Result<Option<FormulaRecord>> {
        get_formula(&self.txn.open_table(FORMULAS)?, id)
    }

    pub fn has_formula(&self, id: FormulaId) -> Result<bool> {
        Ok(self.txn.open_table(FORMULAS)?.get(id.to_key())?.is_some())
    }

    /// Every formula id, in id order (restart walks these).
    pub fn formula_ids(&self) -> Result<Vec<FormulaId>> {
        let formulas = self.txn.open_table(FORMULAS)?;
        let mut ids = Vec::with_capacity(usize::try_from(formulas.len()?).unwrap_or(0));
        for entry in formulas.iter()? {
            let (key, _) = entry?;
            ids.push(FormulaId::from_key(key.value()));
        }
        Ok(ids)
    }
}

impl Store {
    /// Stores one formula in one atomic write (which may share its commit with other writes waiting beside it).
    pub fn put_formula(&self, id: FormulaId, record: FormulaRecord) -> Commit<()> {
        self.transact_repeatable(move |tx| tx.put_formula(id, &record))
    }
}
