//! What the node's formula collector reads and removes: every formula,
//! every name and every held message in one pass, and a collected agent's
//! mailbox. The store does not know what a formula refers to (the node
//! encodes formula bodies), so it hands the records over and the node
//! decides what is reachable, inside the same write transaction.

use redb::{ReadableTable, ReadableTableMetadata};

use crate::error::{Result, StoreError};
use crate::formulas::{FormulaRecord, decode_formula};
use crate::ids::{BlobHash, FormulaId};
use crate::schema::{BLOBS, FORMULAS};
use crate::tx::{Snapshot, Tx};

impl Tx<'_> {
    /// Every formula with its record, in id order.
    pub fn all_formulas(&mut self) -> Result<Vec<(FormulaId, FormulaRecord)>> {
        let mut all = Vec::with_capacity(usize::try_from(self.tables.formulas.open()?.len()?).unwrap_or(0));
        for entry in self.tables.formulas.open()?.iter()? {
            let (key, value) = entry?;
            all.push((FormulaId::from_key(key.value()), decode_formula(value.value())?));
        }
        Ok(all)
    }

    /// Every name as (pet store, the formula it names), in no useful order.
    pub fn all_names(&mut self) -> Result<Vec<(FormulaId, FormulaId)>> {
        let mut stores = std::collections::HashMap::new();
        for entry in self.tables.pet_store_ids.open()?.iter()? {
            let (number, id) = entry?;
            stores.insert(number.value(), FormulaId::from_key(id.value()));
        }
        let mut all = Vec::new();
        for entry in self.tables.pet_names.open()?.iter()? {
            let (key, value) = entry?;
            let (number, _) = key.value();
            let pet_store = stores.get(&number).copied().ok_or_else(|| StoreError::CorruptRecord {
                table: "pet names",
                detail: format!("pet store number {number} has no pet store id"),
            })?;
            all.push((pet_store, FormulaId::from_key(value.value())));
        }
        Ok(all)
    }

    /// Every message still held, as (agent, message bytes).
    pub fn all_messages(&mut self) -> Result<Vec<(FormulaId, Vec<u8>)>> {
        let mut all = Vec::new();
        for entry in self.tables.messages.open()?.iter()? {
            let (key, value) = entry?;
            let (agent, _) = key.value();
            all.push((FormulaId::from_key(agent), value.value().to_vec()));
        }
        Ok(all)
    }

    /// Removes an agent's mailbox: its messages, who sent them, what each
    /// peer holds there, and its next number. Answers the message bytes
    /// removed.
    pub fn remove_mailbox(&mut self, agent: FormulaId) -> Result<u64> {
        let key = agent.to_key();
        let mut numbers = Vec::new();
        let mut bytes = 0u64;
        for entry in self.tables.messages.open()?.range((key, 0u64)..)? {
            let (entry_key, value) = entry?;
            let (entry_agent, number) = entry_key.value();
            if entry_agent != key {
                break;
            }
            numbers.push(number);
            bytes = bytes.saturating_add(value.value().len() as u64);
        }
        for number in numbers {
            self.tables.messages.open()?.remove((key, number))?;
            self.tables.message_senders.open()?.remove((key, number))?;
        }
        let mut senders = Vec::new();
        for entry in self.tables.mail_held.open()?.range((key, [0u8; 32])..)? {
            let (entry_key, _) = entry?;
            let (entry_agent, sender) = entry_key.value();
            if entry_agent != key {
                break;
            }
            senders.push(sender);
        }
        for sender in senders {
            self.tables.mail_held.open()?.remove((key, sender))?;
        }
        self.tables.mailbox_next_number.open()?.remove(key)?;
        Ok(bytes)
    }

    /// The stored length of a blob, if it is stored.
    pub fn blob_len(&mut self, hash: BlobHash) -> Result<Option<u64>> {
        Ok(self
            .tables
            .blobs
            .open()?
            .get(*hash.as_bytes())?
            .map(|value| value.value().0))
    }
}

impl Snapshot {
    /// How many formulas are stored.
    pub fn formula_count(&self) -> Result<u64> {
        Ok(self.txn.open_table(FORMULAS)?.len()?)
    }

    /// How many blobs are stored, and their bytes together.
    pub fn blob_totals(&self) -> Result<(u64, u64)> {
        let blobs = self.txn.open_table(BLOBS)?;
        let mut bytes = 0u64;
        for entry in blobs.iter()? {
            let (_, value) = entry?;
            bytes = bytes.saturating_add(value.value().0);
        }
        Ok((blobs.len()?, bytes))
    }
}
