//! Where a session stands with authentication.

use std::time::Instant;

/// Failed authentications after which a session ends.
pub const MAX_AUTH_ATTEMPTS: u32 = 3;

/// One session's authentication, from the first AUTH_REQ to success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AuthState {
    /// Waiting for an AUTH_REQ; `failures` failed so far.
    Required {
        failures: u32,
    },
    /// The password of `user` is being checked: requests wait.
    Checking {
        user: Vec<u8>,
        failures: u32,
    },
    /// A passive client failed (failure number `failures`): its reply and the
    /// requests after it are held until `until` (None until the driver has
    /// said how long).
    Held {
        until: Option<Instant>,
        failures: u32,
    },
    Authenticated,
}

impl AuthState {
    pub(super) fn authenticated(&self) -> bool {
        *self == AuthState::Authenticated
    }

    /// Whether requests wait (a check under way, or a failure held).
    pub(super) fn blocks(&self) -> bool {
        matches!(self, AuthState::Checking { .. } | AuthState::Held { .. })
    }

    pub(super) fn held(&self) -> bool {
        matches!(self, AuthState::Held { .. })
    }

    pub(super) fn failures(&self) -> u32 {
        match self {
            AuthState::Required { failures }
            | AuthState::Checking { failures, .. }
            | AuthState::Held { failures, .. } => *failures,
            AuthState::Authenticated => 0,
        }
    }
}
