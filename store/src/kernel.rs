//! The kernel's tables: kref counters, krefs (kref → owner/info bytes),
//! c-lists (vat + kref ↔ vref, both ways), subclusters, vat configs, each
//! vat's baggage, the set of revoked krefs, the OCAP URLs issued (a
//! random token naming a kref) and those of other nodes redeemed here.
//!
//! The kernel encodes every value; the store keeps bytes. One kernel step
//! (a crank) should be one [`crate::Store::transact`] call.

use redb::ReadableTable;

use crate::error::{Result, StoreError};
use crate::ids::{BaggageKey, Kref, KrefKind, SubclusterId, VatId, Vref, random_bytes};
use crate::schema::{
    BAGGAGE, CLIST_BY_KREF, CLIST_BY_VREF, COUNTER_NEXT_KO, COUNTER_NEXT_KP, COUNTER_NEXT_SUBCLUSTER, COUNTER_NEXT_VAT,
    COUNTERS, KREFS, KrefKey, OCAP_URLS, REDEEMED_URLS, REVOKED, SUBCLUSTERS, VAT_CONFIGS, VatKrefKey, VatTextKey,
    read_counter,
};
use crate::tx::{Snapshot, Tx};

const fn counter_of(kind: KrefKind) -> &'static str {
    match kind {
        KrefKind::Object => COUNTER_NEXT_KO,
        KrefKind::Promise => COUNTER_NEXT_KP,
    }
}

fn get_bytes<K: redb::Key + 'static>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: K::SelfType<'_>,
) -> Result<Option<Vec<u8>>> {
    Ok(table.get(key)?.map(|value| value.value().to_vec()))
}

fn clist_vref(
    by_kref: &impl ReadableTable<VatKrefKey, &'static [u8]>,
    vat: &VatId,
    kref: Kref,
) -> Result<Option<Vref>> {
    by_kref
        .get((vat.as_str().as_bytes(), kref.kind.tag(), kref.number))?
        .map(|value| Vref::from_stored(value.value()))
        .transpose()
}

fn clist_kref(by_vref: &impl ReadableTable<VatTextKey, KrefKey>, vat: &VatId, vref: &Vref) -> Result<Option<Kref>> {
    by_vref
        .get((vat.as_str().as_bytes(), vref.as_str().as_bytes()))?
        .map(|value| Kref::from_key(value.value()))
        .transpose()
}

fn list_clist(by_kref: &impl ReadableTable<VatKrefKey, &'static [u8]>, vat: &VatId) -> Result<Vec<(Kref, Vref)>> {
    let vat_bytes = vat.as_str().as_bytes();
    let mut listed = Vec::new();
    for entry in by_kref.range((vat_bytes, 0u8, 0u64)..)? {
        let (key, value) = entry?;
        let (entry_vat, tag, number) = key.value();
        if entry_vat != vat_bytes {
            break;
        }
        listed.push((Kref::from_key((tag, number))?, Vref::from_stored(value.value())?));
    }
    Ok(listed)
}

fn list_baggage(
    baggage: &impl ReadableTable<VatTextKey, &'static [u8]>,
    vat: &VatId,
) -> Result<Vec<(BaggageKey, Vec<u8>)>> {
    let vat_bytes = vat.as_str().as_bytes();
    let mut listed = Vec::new();
    for entry in baggage.range((vat_bytes, &b""[..])..)? {
        let (key, value) = entry?;
        let (entry_vat, baggage_key) = key.value();
        if entry_vat != vat_bytes {
            break;
        }
        listed.push((BaggageKey::from_stored(baggage_key)?, value.value().to_vec()));
    }
    Ok(listed)
}

fn list_by_name<I>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    make_id: impl Fn(&[u8]) -> Result<I>,
) -> Result<Vec<(I, Vec<u8>)>> {
    let mut listed = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        listed.push((make_id(key.value())?, value.value().to_vec()));
    }
    Ok(listed)
}

impl Tx<'_> {
    /// Hands out the next kref of `kind` (`ko1`, `ko2`, … and `kp1`, …).
    pub fn allocate_kref(&mut self, kind: KrefKind) -> Result<Kref> {
        let counter = counter_of(kind);
        let number = read_counter(self.tables.counters.open()?, counter)?;
        self.tables.counters.open()?.insert(counter, number.saturating_add(1))?;
        Ok(Kref { kind, number })
    }

    /// Hands out the next vat id (`v1`, `v2`, …); never reused.
    pub fn allocate_vat_id(&mut self) -> Result<VatId> {
        let number = self.next_number(COUNTER_NEXT_VAT)?;
        format!("v{number}").parse()
    }

    /// Hands out the next subcluster id (`s1`, `s2`, …); never reused.
    pub fn allocate_subcluster_id(&mut self) -> Result<SubclusterId> {
        let number = self.next_number(COUNTER_NEXT_SUBCLUSTER)?;
        format!("s{number}").parse()
    }

    /// Counters missing from older stores start at 1.
    fn next_number(&mut self, counter: &'static str) -> Result<u64> {
        let stored = self.tables.counters.open()?.get(counter)?.map(|value| value.value());
        let number = stored.unwrap_or(1).max(1);
        self.tables.counters.open()?.insert(counter, number.saturating_add(1))?;
        Ok(number)
    }

    /// Stores a kref's owner/info bytes, replacing the old ones.
    pub fn put_kref(&mut self, kref: Kref, info: &[u8]) -> Result<()> {
        self.tables.krefs.open()?.insert(kref.to_key(), info)?;
        Ok(())
    }

    pub fn get_kref(&mut self, kref: Kref) -> Result<Option<Vec<u8>>> {
        get_bytes(self.tables.krefs.open()?, kref.to_key())
    }

    /// Forgets a kref's info; `false` if there was none.
    pub fn remove_kref(&mut self, kref: Kref) -> Result<bool> {
        Ok(self.tables.krefs.open()?.remove(kref.to_key())?.is_some())
    }

    /// Maps `kref` to `vref` in `vat`'s c-list, both ways. An older mapping
    /// of either side in that vat is dropped, so the two ways always agree.
    pub fn add_clist_entry(&mut self, vat: &VatId, kref: Kref, vref: &Vref) -> Result<()> {
        if let Some(old_vref) = clist_vref(self.tables.clist_by_kref.open()?, vat, kref)? {
            self.tables
                .clist_by_vref
                .open()?
                .remove((vat.as_str().as_bytes(), old_vref.as_str().as_bytes()))?;
        }
        if let Some(old_kref) = clist_kref(self.tables.clist_by_vref.open()?, vat, vref)? {
            self.tables.clist_by_kref.open()?.remove((
                vat.as_str().as_bytes(),
                old_kref.kind.tag(),
                old_kref.number,
            ))?;
        }
        let vat_bytes = vat.as_str().as_bytes();
        self.tables
            .clist_by_kref
            .open()?
            .insert((vat_bytes, kref.kind.tag(), kref.number), vref.as_str().as_bytes())?;
        self.tables
            .clist_by_vref
            .open()?
            .insert((vat_bytes, vref.as_str().as_bytes()), kref.to_key())?;
        Ok(())
    }

    /// Removes `kref` from `vat`'s c-list (both ways), returning its vref.
    pub fn remove_clist_entry(&mut self, vat: &VatId, kref: Kref) -> Result<Option<Vref>> {
        let vat_bytes = vat.as_str().as_bytes();
        let Some(vref) = clist_vref(self.tables.clist_by_kref.open()?, vat, kref)? else {
            return Ok(None);
        };
        self.tables
            .clist_by_kref
            .open()?
            .remove((vat_bytes, kref.kind.tag(), kref.number))?;
        self.tables
            .clist_by_vref
            .open()?
            .remove((vat_bytes, vref.as_str().as_bytes()))?;
        Ok(Some(vref))
    }

    pub fn clist_vref(&mut self, vat: &VatId, kref: Kref) -> Result<Option<Vref>> {
        clist_vref(self.tables.clist_by_kref.open()?, vat, kref)
    }

    pub fn clist_kref(&mut self, vat: &VatId, vref: &Vref) -> Result<Option<Kref>> {
        clist_kref(self.tables.clist_by_vref.open()?, vat, vref)
    }

    pub fn put_subcluster(&mut self, id: &SubclusterId, config: &[u8]) -> Result<()> {
        self.tables.subclusters.open()?.insert(id.as_str().as_bytes(), config)?;
        Ok(())
    }

    pub fn remove_subcluster(&mut self, id: &SubclusterId) -> Result<bool> {
        Ok(self
            .tables
            .subclusters
            .open()?
            .remove(id.as_str().as_bytes())?
            .is_some())
    }

    pub fn put_vat_config(&mut self, vat: &VatId, config: &[u8]) -> Result<()> {
        self.tables
            .vat_configs
            .open()?
            .insert(vat.as_str().as_bytes(), config)?;
        Ok(())
    }

    pub fn remove_vat_config(&mut self, vat: &VatId) -> Result<bool> {
        Ok(self
            .tables
            .vat_configs
            .open()?
            .remove(vat.as_str().as_bytes())?
            .is_some())
    }

    pub fn get_baggage(&mut self, vat: &VatId, key: &BaggageKey) -> Result<Option<Vec<u8>>> {
        get_bytes(
            self.tables.baggage.open()?,
            (vat.as_str().as_bytes(), key.as_str().as_bytes()),
        )
    }

    /// Adds a baggage entry; fails with [`StoreError::BaggageKeyExists`] if
    /// the key is there already (baggage `init`).
    pub fn init_baggage(&mut self, vat: &VatId, key: &BaggageKey, value: &[u8]) -> Result<()> {
        if self.get_baggage(vat, key)?.is_some() {
            return Err(StoreError::BaggageKeyExists {
                vat: vat.to_string(),
                key: key.to_string(),
            });
        }
        self.put_baggage(vat, key, value)
    }

    /// Replaces a baggage entry; fails with [`StoreError::BaggageKeyMissing`]
    /// if the key is not there (baggage `set`).
    pub fn set_baggage(&mut self, vat: &VatId, key: &BaggageKey, value: &[u8]) -> Result<()> {
        if self.get_baggage(vat, key)?.is_none() {
            return Err(StoreError::BaggageKeyMissing {
                vat: vat.to_string(),
                key: key.to_string(),
            });
        }
        self.put_baggage(vat, key, value)
    }

    /// Adds or replaces a baggage entry.
    pub fn put_baggage(&mut self, vat: &VatId, key: &BaggageKey, value: &[u8]) -> Result<()> {
        self.tables
            .baggage
            .open()?
            .insert((vat.as_str().as_bytes(), key.as_str().as_bytes()), value)?;
        Ok(())
    }

    /// Removes a baggage entry; `false` if there was none.
    pub fn delete_baggage(&mut self, vat: &VatId, key: &BaggageKey) -> Result<bool> {
        Ok(self
            .tables
            .baggage
            .open()?
            .remove((vat.as_str().as_bytes(), key.as_str().as_bytes()))?
            .is_some())
    }

    /// Forgets everything about a vat: its baggage, c-list and config.
    pub fn forget_vat(&mut self, vat: &VatId) -> Result<()> {
        let vat_bytes = vat.as_str().as_bytes();
        for (key, _) in list_baggage(self.tables.baggage.open()?, vat)? {
            self.tables
                .baggage
                .open()?
                .remove((vat_bytes, key.as_str().as_bytes()))?;
        }
        for (kref, vref) in list_clist(self.tables.clist_by_kref.open()?, vat)? {
            self.tables
                .clist_by_kref
                .open()?
                .remove((vat_bytes, kref.kind.tag(), kref.number))?;
            self.tables
                .clist_by_vref
                .open()?
                .remove((vat_bytes, vref.as_str().as_bytes()))?;
        }
        self.tables.vat_configs.open()?.remove(vat_bytes)?;
        Ok(())
    }

    /// Revokes `kref` for good; `false` if it was revoked already.
    pub fn revoke(&mut self, kref: Kref) -> Result<bool> {
        Ok(self.tables.revoked.open()?.insert(kref.to_key(), ())?.is_none())
    }

    pub fn is_revoked(&mut self, kref: Kref) -> Result<bool> {
        Ok(self.tables.revoked.open()?.get(kref.to_key())?.is_some())
    }

    /// Records a new OCAP URL token for `kref`: 32 random bytes, the
    /// authority to reach the object from another node.
    pub fn issue_ocap_token(&mut self, kref: Kref) -> Result<[u8; 32]> {
        let token = random_bytes()?;
        self.tables.ocap_urls.open()?.insert(&token, kref.to_key())?;
        Ok(token)
    }

    /// Records that another node's OCAP URL `url` was redeemed as `kref`.
    pub fn put_redeemed_url(&mut self, kref: Kref, url: &str) -> Result<()> {
        self.tables
            .redeemed_urls
            .open()?
            .insert(kref.to_key(), url.as_bytes())?;
        Ok(())
    }

    /// Forgets every OCAP URL token of `kref`; answers how many there were.
    pub fn remove_ocap_tokens(&mut self, kref: Kref) -> Result<usize> {
        let wanted = kref.to_key();
        let mut tokens = Vec::new();
        for entry in self.tables.ocap_urls.open()?.iter()? {
            let (token, named) = entry?;
            if named.value() == wanted {
                tokens.push(token.value());
            }
        }
        for token in &tokens {
            self.tables.ocap_urls.open()?.remove(token)?;
        }
        Ok(tokens.len())
    }
}

impl Snapshot {
    /// The numbers the next `ko` and `kp` krefs will get.
    pub fn next_kref_numbers(&self) -> Result<(u64, u64)> {
        let counters = self.txn.open_table(COUNTERS)?;
        Ok((
            read_counter(&counters, COUNTER_NEXT_KO)?,
            read_counter(&counters, COUNTER_NEXT_KP)?,
        ))
    }

    pub fn get_kref(&self, kref: Kref) -> Result<Option<Vec<u8>>> {
        get_bytes(&self.txn.open_table(KREFS)?, kref.to_key())
    }

    /// Every kref with info, in kref order (all `ko` before all `kp`).
    pub fn list_krefs(&self) -> Result<Vec<(Kref, Vec<u8>)>> {
        let krefs = self.txn.open_table(KREFS)?;
        let mut listed = Vec::new();
        for entry in krefs.iter()? {
            let (key, value) = entry?;
            listed.push((Kref::from_key(key.value())?, value.value().to_vec()));
        }
        Ok(listed)
    }

    pub fn clist_vref(&self, vat: &VatId, kref: Kref) -> Result<Option<Vref>> {
        clist_vref(&self.txn.open_table(CLIST_BY_KREF)?, vat, kref)
    }

    pub fn clist_kref(&self, vat: &VatId, vref: &Vref) -> Result<Option<Kref>> {
        clist_kref(&self.txn.open_table(CLIST_BY_VREF)?, vat, vref)
    }

    /// `vat`'s c-list, in kref order.
    pub fn list_clist(&self, vat: &VatId) -> Result<Vec<(Kref, Vref)>> {
        list_clist(&self.txn.open_table(CLIST_BY_KREF)?, vat)
    }

    pub fn get_subcluster(&self, id: &SubclusterId) -> Result<Option<Vec<u8>>> {
        get_bytes(&self.txn.open_table(SUBCLUSTERS)?, id.as_str().as_bytes())
    }

    pub fn list_subclusters(&self) -> Result<Vec<(SubclusterId, Vec<u8>)>> {
        list_by_name(&self.txn.open_table(SUBCLUSTERS)?, SubclusterId::from_stored)
    }

    pub fn get_vat_config(&self, vat: &VatId) -> Result<Option<Vec<u8>>> {
        get_bytes(&self.txn.open_table(VAT_CONFIGS)?, vat.as_str().as_bytes())
    }

    pub fn list_vat_configs(&self) -> Result<Vec<(VatId, Vec<u8>)>> {
        list_by_name(&self.txn.open_table(VAT_CONFIGS)?, VatId::from_stored)
    }

    pub fn get_baggage(&self, vat: &VatId, key: &BaggageKey) -> Result<Option<Vec<u8>>> {
        get_bytes(
            &self.txn.open_table(BAGGAGE)?,
            (vat.as_str().as_bytes(), key.as_str().as_bytes()),
        )
    }

    /// `vat`'s baggage, in key order (UTF-8 byte order).
    pub fn list_baggage(&self, vat: &VatId) -> Result<Vec<(BaggageKey, Vec<u8>)>> {
        list_baggage(&self.txn.open_table(BAGGAGE)?, vat)
    }

    pub fn is_revoked(&self, kref: Kref) -> Result<bool> {
        Ok(self.txn.open_table(REVOKED)?.get(kref.to_key())?.is_some())
    }

    /// The kref an OCAP URL token names, if this store issued it.
    pub fn ocap_token_kref(&self, token: &[u8; 32]) -> Result<Option<Kref>> {
        let table = match self.txn.open_table(OCAP_URLS) {
            Ok(table) => table,
            // A store made before OCAP URLs, not written since.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        table.get(token)?.map(|value| Kref::from_key(value.value())).transpose()
    }

    fn redeemed_table(&self) -> Result<Option<redb::ReadOnlyTable<KrefKey, &'static [u8]>>> {
        match self.txn.open_table(REDEEMED_URLS) {
            Ok(table) => Ok(Some(table)),
            // A store made before OCAP URLs, not written since.
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// The other node's OCAP URL `kref` was redeemed from, if it was.
    pub fn redeemed_url(&self, kref: Kref) -> Result<Option<String>> {
        let Some(table) = self.redeemed_table()? else {
            return Ok(None);
        };
        Ok(table
            .get(kref.to_key())?
            .map(|value| String::from_utf8_lossy(value.value()).into_owned()))
    }

    /// The kref another node's OCAP URL `url` was redeemed as, if it was.
    pub fn redeemed_url_kref(&self, url: &str) -> Result<Option<Kref>> {
        let Some(table) = self.redeemed_table()? else {
            return Ok(None);
        };
        for entry in table.iter()? {
            let (kref, stored) = entry?;
            if stored.value() == url.as_bytes() {
                return Ok(Some(Kref::from_key(kref.value())?));
            }
        }
        Ok(None)
    }

    /// Every kref some OCAP URL names (each once).
    pub fn ocap_url_krefs(&self) -> Result<Vec<Kref>> {
        let table = match self.txn.open_table(OCAP_URLS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut krefs = Vec::new();
        for entry in table.iter()? {
            let (_, kref) = entry?;
            let kref = Kref::from_key(kref.value())?;
            if !krefs.contains(&kref) {
                krefs.push(kref);
            }
        }
        Ok(krefs)
    }
}
