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

/// All accounts, in config order; the first is the default.
pub struct Accounts {
    list: Vec<Arc<Account>>,
}

impl Accounts {
    pub fn new(list: Vec<Arc<Account>>) -> Self {
        assert!(!list.is_empty(), "config validation requires an account");
        Accounts { list }
    }

    pub fn default_account(&self) -> &Arc<Account> {
        &self.list[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.list.iter()
    }
}
