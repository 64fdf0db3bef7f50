//! The process-wide store of minted IMDSv2 binding certificates.
//!
//! Every [`ManagedIdentity`](crate::ManagedIdentity) of the process that asks the same IMDS for
//! mTLS PoP tokens of the same identity shares one [`BindingSlot`]: one certificate is minted
//! (one CSR, one `issuecredential` call) and every credential binds its tokens to it, so a
//! shared engine serves one credential's token to the other (MSAL keeps its minted
//! certificates in a process-wide cache keyed by identity and attestation flag).
//!
//! The key is the IMDS base URL, the transport reaching it (none for the default transport,
//! the transport instance otherwise: two emulators in one test process are told apart by their
//! transports, not by the production URL both answer under), the identity and the attestation
//! flag. The store holds its slots weakly: when the last credential using a slot is dropped,
//! the slot and its binding go (the key's PKCS#8 copy is zeroized by `SoftwareKey`), and a
//! later credential mints anew.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use crate::id::ManagedIdentityId;

use super::Binding;

/// Where a binding may be used.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StoreKey {
    /// The IMDS base URL the certificate was minted by.
    pub(crate) imds_base: String,
    /// The address of the transport instance, when one was given to the builder (`None`: the
    /// default transport, which reaches the real IMDS).
    pub(crate) transport: Option<usize>,
    /// The identity, kind and value.
    pub(crate) id: ManagedIdentityId,
    /// Whether the certificate request carries an attestation token.
    pub(crate) attestation: bool,
}

/// The binding of one [`StoreKey`], shared by the credentials using it.
#[derive(Default)]
pub(crate) struct BindingSlot {
    /// The current binding (also one too close to expiry: callers check).
    pub(crate) binding: Mutex<Option<Binding>>,
    /// Held while minting, so concurrent misses of all sharing credentials mint once.
    pub(crate) mint_gate: tokio::sync::Mutex<()>,
}

impl fmt::Debug for BindingSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindingSlot")
            .field(
                "binding",
                &*self.binding.lock().unwrap_or_else(PoisonError::into_inner),
            )
            .finish_non_exhaustive()
    }
}

static STORE: LazyLock<Mutex<HashMap<StoreKey, Weak<BindingSlot>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The slot of `key`: the live one, or a new one registered for it.
pub(crate) fn slot(key: StoreKey) -> Arc<BindingSlot> {
    let mut store = STORE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = store.get(&key).and_then(Weak::upgrade) {
        return slot;
    }
    // Forget the slots no credential uses any more (their bindings are already dropped).
    store.retain(|_, slot| slot.strong_count() > 0);
    let slot = Arc::new(BindingSlot::default());
    store.insert(key, Arc::downgrade(&slot));
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(transport: Option<usize>, id: ManagedIdentityId, attestation: bool) -> StoreKey {
        StoreKey {
            imds_base: "http://169.254.169.254".into(),
            transport,
            id,
            attestation,
        }
    }

    #[test]
    fn slots_are_shared_per_key_and_forgotten_when_unused() {
        // Addresses no real transport has (odd, so no live allocation of a transport).
        let a = key(Some(0x51), ManagedIdentityId::ClientId("x".into()), false);
        let first = slot(a.clone());
        let second = slot(a.clone());
        assert!(Arc::ptr_eq(&first, &second));
        for other in [
            key(Some(0x53), ManagedIdentityId::ClientId("x".into()), false),
            key(Some(0x51), ManagedIdentityId::ObjectId("x".into()), false),
            key(Some(0x51), ManagedIdentityId::ClientId("x".into()), true),
            key(None, ManagedIdentityId::ClientId("x".into()), false),
            StoreKey {
                imds_base: "http://127.0.0.1:1".into(),
                ..a.clone()
            },
        ] {
            assert!(!Arc::ptr_eq(&first, &slot(other)));
        }
        // Held weakly: once unused, the key gets a fresh slot.
        let weak = Arc::downgrade(&first);
        drop((first, second));
        assert!(weak.upgrade().is_none());
        let fresh = slot(a);
        assert!(!Weak::ptr_eq(&weak, &Arc::downgrade(&fresh)));
    }
}
