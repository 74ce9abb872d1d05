//! Scopes: the default session (everything written before sessions existed) and named
//! sessions. A scope decides the tags of its namespaces and keys and where its namespace
//! catalog lives; everything else (sealing, commits, expiry) is shared.

use sealkv_crypto::{NameKey, TAG_BYTES};

/// Where a store's named sessions are listed: one sealed row per session, under this
/// reserved namespace tag, keyed by the session's tag.
pub(crate) fn sessions_catalog_tag(nk: &NameKey) -> [u8; TAG_BYTES] {
    nk.record_tag(b"session catalog")
}

/// The default session's namespace catalog.
fn default_catalog_tag(nk: &NameKey) -> [u8; TAG_BYTES] {
    nk.record_tag(b"namespace catalog")
}

/// The default session, or one named session.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    /// The session's name; `None` for the default session.
    pub(crate) session: Option<String>,
    /// A named session's own name key (`None`: the store's, for the default session).
    names: Option<NameKey>,
    /// Tag of this scope's namespace catalog.
    pub(crate) catalog_tag: [u8; TAG_BYTES],
    /// Tag of the session's entry in the session catalog (`None` by default).
    pub(crate) session_tag: Option<[u8; TAG_BYTES]>,
}

impl Scope {
    /// The default session: the tags of earlier builds.
    pub(crate) fn default_session(nk: &NameKey) -> Self {
        Self {
            session: None,
            names: None,
            catalog_tag: default_catalog_tag(nk),
            session_tag: None,
        }
    }

    /// A named session (the name already checked).
    pub(crate) fn named(nk: &NameKey, session: &str) -> Self {
        let (session_tag, catalog_tag) = nk.session_tags(session.as_bytes());
        Self {
            session: Some(session.to_string()),
            names: Some(nk.session_key(session.as_bytes())),
            catalog_tag,
            session_tag: Some(session_tag),
        }
    }

    /// The tag of a namespace in this scope.
    pub(crate) fn ns_tag(&self, nk: &NameKey, namespace: &str) -> [u8; TAG_BYTES] {
        self.names
            .as_ref()
            .unwrap_or(nk)
            .namespace_tag(namespace.as_bytes())
    }

    /// The tag of a key of a namespace in this scope.
    pub(crate) fn key_tag(&self, nk: &NameKey, namespace: &str, key: &str) -> [u8; TAG_BYTES] {
        self.names
            .as_ref()
            .unwrap_or(nk)
            .key_tag(namespace.as_bytes(), key.as_bytes())
    }

    /// How errors name a namespace of this scope: `ns`, or `session/ns`.
    pub(crate) fn label(&self, namespace: &str) -> String {
        match &self.session {
            None => namespace.to_string(),
            Some(s) => format!("{s}/{namespace}"),
        }
    }

    /// The lock name of a transaction's lock key in this scope: sessions do not share
    /// lock keys.
    pub(crate) fn lock_name(&self, lock_key: &str) -> (Option<String>, String) {
        (self.session.clone(), lock_key.to_string())
    }
}
