//! Pet stores: pet store id → (pet name → formula id), listed in name
//! order, with a reverse index formula id → (pet store, name).
//!
//! A pet store's 64-byte id is mapped once to a small number, and names are
//! keyed by that number, which keeps a store of a million names compact.
//! Every change to a name updates both indexes in the same transaction.

use redb::ReadableTable;

use crate::error::{Result, StoreError};
use crate::events::{Event, Follower, NameChange, NameChangeKind};
use crate::ids::{FormulaId, PetName};
use crate::schema::{
    COUNTER_NEXT_PET_STORE, IdKey, PET_NAMES, PET_NAMES_BY_ID, PET_STORE_IDS, PET_STORE_NUMBERS, read_counter,
};
use crate::tx::{Snapshot, Tx};
use crate::{Commit, Store};

/// A pet store's names in order, then the changes to them.
pub type NameFollower = Follower<Vec<(PetName, FormulaId)>, NameChange>;

type NamesTable = (u64, &'static [u8]);
type ByIdTable = (IdKey, u64, &'static [u8]);

fn pet_store_number(numbers: &impl ReadableTable<IdKey, u64>, pet_store: FormulaId) -> Result<Option<u64>> {
    Ok(numbers.get(pet_store.to_key())?.map(|value| value.value()))
}

fn lookup(names: &impl ReadableTable<NamesTable, IdKey>, number: u64, name: &PetName) -> Result<Option<FormulaId>> {
    Ok(names
        .get((number, name.as_str().as_bytes()))?
        .map(|value| FormulaId::from_key(value.value())))
}

fn list(names: &impl ReadableTable<NamesTable, IdKey>, number: u64) -> Result<Vec<(PetName, FormulaId)>> {
    let mut listed = Vec::new();
    for entry in names.range((number, &b""[..])..)? {
        let (key, value) = entry?;
        let (entry_number, name) = key.value();
        if entry_number != number {
            break;
        }
        listed.push((PetName::from_stored(name)?, FormulaId::from_key(value.value())));
    }
    Ok(listed)
}

fn reverse_lookup(
    by_id: &impl ReadableTable<ByIdTable, ()>,
    store_ids: &impl ReadableTable<u64, IdKey>,
    id: FormulaId,
) -> Result<Vec<(FormulaId, PetName)>> {
    let key = id.to_key();
    let mut found = Vec::new();
    for entry in by_id.range((key, 0u64, &b""[..])..)? {
        let (entry_key, _) = entry?;
        let (entry_id, number, name) = entry_key.value();
        if entry_id != key {
            break;
        }
        let pet_store = store_ids
            .get(number)?
            .map(|value| FormulaId::from_key(value.value()))
            .ok_or_else(|| StoreError::CorruptRecord {
                table: "pet names",
                detail: format!("pet store number {number} has no pet store id"),
            })?;
        found.push((pet_store, PetName::from_stored(name)?));
    }
    Ok(found)
}

fn reverse_lookup_in(by_id: &impl ReadableTable<ByIdTable, ()>, number: u64, id: FormulaId) -> Result<Vec<PetName>> {
    let key = id.to_key();
    let mut found = Vec::new();
    for entry in by_id.range((key, number, &b""[..])..)? {
        let (entry_key, _) = entry?;
        let (entry_id, entry_number, name) = entry_key.value();
        if entry_id != key || entry_number != number {
            break;
        }
        found.push(PetName::from_stored(name)?);
    }
    Ok(found)
}

impl Tx<'_> {
    fn pet_store_number_or_create(&mut self, pet_store: FormulaId) -> Result<u64> {
        if let Some(number) = pet_store_number(self.tables.pet_store_numbers.open()?, pet_store)? {
            return Ok(number);
        }
        let number = read_counter(self.tables.counters.open()?, COUNTER_NEXT_PET_STORE)?;
        self.tables
            .counters
            .open()?
            .insert(COUNTER_NEXT_PET_STORE, number.saturating_add(1))?;
        self.tables
            .pet_store_numbers
            .open()?
            .insert(pet_store.to_key(), number)?;
        self.tables.pet_store_ids.open()?.insert(number, pet_store.to_key())?;
        Ok(number)
    }

    fn emit_name(&mut self, pet_store: FormulaId, kind: NameChangeKind) {
        let seq = self.seq;
        self.emit(Event::Name(NameChange { seq, pet_store, kind }));
    }

    /// Names `id` as `name` in `pet_store`, replacing what the name meant.
    pub fn write_name(&mut self, pet_store: FormulaId, name: &PetName, id: FormulaId) -> Result<()> {
        let number = self.pet_store_number_or_create(pet_store)?;
        let name_bytes = name.as_str().as_bytes();
        let previous = self
            .tables
            .pet_names
            .open()?
            .insert((number, name_bytes), id.to_key())?
            .map(|value| value.value());
        if let Some(previous) = previous {
            self.tables
                .pet_names_by_id
                .open()?
                .remove((previous, number, name_bytes))?;
        }
        self.tables
            .pet_names_by_id
            .open()?
            .insert((id.to_key(), number, name_bytes), ())?;
        self.emit_name(pet_store, NameChangeKind::Added { name: name.clone(), id });
        Ok(())
    }

    /// Removes `name` from `pet_store`, returning what it named (`None` if
    /// it named nothing, which is not an error).
    pub fn remove_name(&mut self, pet_store: FormulaId, name: &PetName) -> Result<Option<FormulaId>> {
        let Some(number) = pet_store_number(self.tables.pet_store_numbers.open()?, pet_store)? else {
            return Ok(None);
        };
        let name_bytes = name.as_str().as_bytes();
        let removed = self
            .tables
            .pet_names
            .open()?
            .remove((number, name_bytes))?
            .map(|value| value.value());
        let Some(removed) = removed else {
            return Ok(None);
        };
        self.tables
            .pet_names_by_id
            .open()?
            .remove((removed, number, name_bytes))?;
        self.emit_name(pet_store, NameChangeKind::Removed { name: name.clone() });
        Ok(Some(FormulaId::from_key(removed)))
    }

    /// Moves a name, within one pet store (a rename) or between two, in this
    /// transaction; the target name is replaced. Fails with
    /// [`StoreError::NameNotFound`] if the source name names nothing.
    pub fn move_name(
        &mut self,
        from_store: FormulaId,
        from_name: &PetName,
        to_store: FormulaId,
        to_name: &PetName,
    ) -> Result<FormulaId> {
        if from_store == to_store && from_name == to_name {
            return self
                .lookup_name(from_store, from_name)?
                .ok_or_else(|| StoreError::NameNotFound {
                    name: from_name.clone(),
                });
        }
        let id = self
            .remove_name(from_store, from_name)?
            .ok_or_else(|| StoreError::NameNotFound {
                name: from_name.clone(),
            })?;
        self.write_name(to_store, to_name, id)?;
        Ok(id)
    }

    /// Gives what `from_name` names a second name; the target name is
    /// replaced. Fails with [`StoreError::NameNotFound`] if the source name
    /// names nothing.
    pub fn copy_name(
        &mut self,
        from_store: FormulaId,
        from_name: &PetName,
        to_store: FormulaId,
        to_name: &PetName,
    ) -> Result<FormulaId> {
        let id = self
            .lookup_name(from_store, from_name)?
            .ok_or_else(|| StoreError::NameNotFound {
                name: from_name.clone(),
            })?;
        self.write_name(to_store, to_name, id)?;
        Ok(id)
    }

    /// Removes every name of a pet store (when the store itself is
    /// collected), returning how many there were.
    pub fn remove_pet_store(&mut self, pet_store: FormulaId) -> Result<usize> {
        let Some(number) = pet_store_number(self.tables.pet_store_numbers.open()?, pet_store)? else {
            return Ok(0);
        };
        let names = list(self.tables.pet_names.open()?, number)?;
        for (name, _) in &names {
            self.remove_name(pet_store, name)?;
        }
        self.tables.pet_store_numbers.open()?.remove(pet_store.to_key())?;
        self.tables.pet_store_ids.open()?.remove(number)?;
        Ok(names.len())
    }

    pub fn lookup_name(&mut self, pet_store: FormulaId, name: &PetName) -> Result<Option<FormulaId>> {
        match pet_store_number(self.tables.pet_store_numbers.open()?, pet_store)? {
            Some(number) => lookup(self.tables.pet_names.open()?, number, name),
            None => Ok(None),
        }
    }

    pub fn list_names(&mut self, pet_store: FormulaId) -> Result<Vec<(PetName, FormulaId)>> {
        match pet_store_number(self.tables.pet_store_numbers.open()?, pet_store)? {
            Some(number) => list(self.tables.pet_names.open()?, number),
            None => Ok(Vec::new()),
        }
    }

    pub fn reverse_lookup(&mut self, id: FormulaId) -> Result<Vec<(FormulaId, PetName)>> {
        reverse_lookup(
            self.tables.pet_names_by_id.open()?,
            self.tables.pet_store_ids.open()?,
            id,
        )
    }
}

impl Snapshot {
    fn pet_store_number(&self, pet_store: FormulaId) -> Result<Option<u64>> {
        pet_store_number(&self.txn.open_table(PET_STORE_NUMBERS)?, pet_store)
    }

    /// What `name` names in `pet_store`, if anything.
    pub fn lookup_name(&self, pet_store: FormulaId, name: &PetName) -> Result<Option<FormulaId>> {
        match self.pet_store_number(pet_store)? {
            Some(number) => lookup(&self.txn.open_table(PET_NAMES)?, number, name),
            None => Ok(None),
        }
    }

    pub fn has_name(&self, pet_store: FormulaId, name: &PetName) -> Result<bool> {
        Ok(self.lookup_name(pet_store, name)?.is_some())
    }

    /// Every name in `pet_store` with what it names, in name order.
    pub fn list_names(&self, pet_store: FormulaId) -> Result<Vec<(PetName, FormulaId)>> {
        match self.pet_store_number(pet_store)? {
            Some(number) => list(&self.txn.open_table(PET_NAMES)?, number),
            None => Ok(Vec::new()),
        }
    }

    /// Every (pet store, name) that names `id`, in any pet store.
    pub fn reverse_lookup(&self, id: FormulaId) -> Result<Vec<(FormulaId, PetName)>> {
        reverse_lookup(
            &self.txn.open_table(PET_NAMES_BY_ID)?,
            &self.txn.open_table(PET_STORE_IDS)?,
            id,
        )
    }

    /// The names `id` has in `pet_store`, in name order.
    pub fn reverse_lookup_in(&self, pet_store: FormulaId, id: FormulaId) -> Result<Vec<PetName>> {
        match self.pet_store_number(pet_store)? {
            Some(number) => reverse_lookup_in(&self.txn.open_table(PET_NAMES_BY_ID)?, number, id),
            None => Ok(Vec::new()),
        }
    }
}

impl Store {
    /// Names `id` as `name` in `pet_store`, in one atomic write (which may share its commit with other writes waiting beside it).
    pub fn write_name(&self, pet_store: FormulaId, name: PetName, id: FormulaId) -> Commit<()> {
        self.transact_repeatable(move |tx| tx.write_name(pet_store, &name, id))
    }

    /// Removes a name in one atomic write (which may share its commit with other writes waiting beside it); see [`Tx::remove_name`].
    pub fn remove_name(&self, pet_store: FormulaId, name: PetName) -> Commit<Option<FormulaId>> {
        self.transact_repeatable(move |tx| tx.remove_name(pet_store, &name))
    }

    /// Moves a name in one atomic write (which may share its commit with other writes waiting beside it); see [`Tx::move_name`].
    pub fn move_name(
        &self,
        from_store: FormulaId,
        from_name: PetName,
        to_store: FormulaId,
        to_name: PetName,
    ) -> Commit<FormulaId> {
        self.transact_repeatable(move |tx| tx.move_name(from_store, &from_name, to_store, &to_name))
    }

    /// Copies a name in one atomic write (which may share its commit with other writes waiting beside it); see [`Tx::copy_name`].
    pub fn copy_name(
        &self,
        from_store: FormulaId,
        from_name: PetName,
        to_store: FormulaId,
        to_name: PetName,
    ) -> Commit<FormulaId> {
        self.transact_repeatable(move |tx| tx.copy_name(from_store, &from_name, to_store, &to_name))
    }

    /// The names in `pet_store` now, then every change to them.
    pub fn follow_names(&self, pet_store: FormulaId) -> Result<NameFollower> {
        // Subscribe before reading, so no change falls between the two.
        let receiver = self.inner.notifier.subscribe_names(pet_store);
        let snapshot = self.read()?;
        let seq = snapshot.commit_seq()?;
        let names = snapshot.list_names(pet_store)?;
        Ok(Follower::new(names, seq, receiver))
    }
}
