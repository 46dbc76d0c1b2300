//! Accounts: one HubSpot credential each, with its token cell and pre-resolved metric handles.

use std::sync::Arc;

use crate::credentials::TokenCell;
use crate::metrics::AccountMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    Static,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Static => "static",
        }
    }
}

pub struct Account {
    pub name: Arc<str>,
    pub kind: AccountKind,
    pub token: TokenCell,
    pub metrics: AccountMetrics,
}

/// All accounts, in config order, and which one is the default.
pub struct Accounts {
    list: Vec<Arc<Account>>,
    default: usize,
}

impl Accounts {
    pub fn new(list: Vec<Arc<Account>>, default: usize) -> Self {
        assert!(
            default < list.len(),
            "config validation requires an account"
        );
        Accounts { list, default }
    }

    pub fn default_account(&self) -> &Arc<Account> {
        &self.list[self.default]
    }

    pub fn get(&self, index: usize) -> &Arc<Account> {
        &self.list[index]
    }

    /// A linear scan: a proxy holds a handful of accounts, and this avoids hashing per request.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Account>> {
        self.list.iter().find(|a| &*a.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|a| &*a.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.list.iter()
    }
}
