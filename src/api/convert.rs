//! Domain values to proto messages and back. Labels are masked here, on the way
//! out, so that no response can carry contact data.

use chrono::{DateTime, TimeZone, Utc};
use prost_types::{Struct, Timestamp, Value as ProtoValue, value::Kind};
use serde_json::Value;

use crate::{
    domain::{
        audit::AuditEvent,
        customers::VisibleCustomer,
        masking::mask_label,
        model::{self, Method, User},
        selection::Offer,
    },
    proto::v1 as pb,
};

/// A timestamp for the wire.
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A wire timestamp, if it is a valid instant.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(ts.seconds, u32::try_from(ts.nanos).ok()?)
        .single()
}

/// Proto enum conversions for the domain's named enums.
pub mod enums {
    use super::{model, pb};

    /// Maps a domain enum to its proto twin, and back.
    macro_rules! mirror {
        ($domain:ident <-> $proto:ident { $($variant:ident),+ $(,)? }) => {
            impl From<model::$domain> for pb::$proto {
                fn from(value: model::$domain) -> Self {
                    match value { $(model::$domain::$variant => pb::$proto::$variant),+ }
                }
            }

            impl TryFrom<pb::$proto> for model::$domain {
                type Error = ();
                fn try_from(value: pb::$proto) -> Result<Self, ()> {
                    match value {
                        $(pb::$proto::$variant => Ok(model::$domain::$variant),)+
                        #[allow(unreachable_patterns)]
                        _ => Err(()),
                    }
                }
            }
        };
    }

    mirror!(MfaPolicy <-> MfaPolicy { Enforced, Optional });
    mirror!(Role <-> Role { Reader, AuthenticationAdmin, PrivilegedAuthenticationAdmin, Provisioner });
    mirror!(Action <-> Action { Read, ResetMfa, ResetAdminMfa, DeleteMethod, SetMfaPolicy, Provision });
    mirror!(MethodKind <-> MethodKind { Phone, AuthenticatorApp, SoftwareOath, HardwareOath, Email, Fido2, RecoveryCodes });
    mirror!(MethodScope <-> MethodScope { User, Org });
    mirror!(MethodState <-> MethodState { Active, Deactivated });
    mirror!(MfaState <-> MfaState { Registered, NotRegistered, RegistrationRequired });
    mirror!(ResetScope <-> ResetScope { All, OrgLevel });
    mirror!(AuditAction <-> AuditAction {
        CustomerCreated, MfaPolicySet, UserCreated, UserUpdated, MethodRegistered, MethodDeleted, MfaReset
    });
}

fn wire<D, P: From<D> + Into<i32>>(value: D) -> i32 {
    P::from(value).into()
}

/// A customer as the caller sees it.
pub fn customer(visible: VisibleCustomer) -> pb::Customer {
    let c = visible.customer;
    pb::Customer {
        id: c.id.to_string(),
        name: c.name,
        mfa_policy: wire::<_, pb::MfaPolicy>(c.mfa_policy),
        enabled_method_kinds: c
            .enabled_method_kinds
            .into_iter()
            .map(wire::<_, pb::MethodKind>)
            .collect(),
        caller_roles: visible
            .caller_roles
            .into_iter()
            .map(wire::<_, pb::Role>)
            .collect(),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
    }
}

/// A user.
pub fn user(u: User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        customer_id: u.customer_id.to_string(),
        mfa_state: wire::<_, pb::MfaState>(u.mfa_state()),
        display_name: u.display_name,
        email: u.email,
        external_subject: u.external_subject.unwrap_or_default(),
        is_admin: u.is_admin,
        mfa_registration_required: u.mfa_registration_required,
        mfa_reset_at: u.mfa_reset_at.map(timestamp),
        active_method_count: i32::try_from(u.active_method_count).unwrap_or(i32::MAX),
        created_at: Some(timestamp(u.created_at)),
        updated_at: Some(timestamp(u.updated_at)),
    }
}

/// A method, its label masked.
pub fn method(m: Method) -> pb::AuthenticationMethod {
    pb::AuthenticationMethod {
        id: m.id.to_string(),
        customer_id: m.customer_id.to_string(),
        user_id: m.user_id.to_string(),
        kind: wire::<_, pb::MethodKind>(m.kind),
        scope: wire::<_, pb::MethodScope>(m.scope),
        label: mask_label(m.kind, &m.label),
        state: wire::<_, pb::MethodState>(m.state),
        has_secret_ref: m.has_secret_ref,
        created_at: Some(timestamp(m.created_at)),
        updated_at: Some(timestamp(m.updated_at)),
    }
}

/// An audit event.
pub fn audit_event(e: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id.to_string(),
        customer_id: e.customer_id.to_string(),
        occurred_at: Some(timestamp(e.occurred_at)),
        actor: e.actor,
        action: wire::<_, pb::AuditAction>(e.action),
        user_id: e.user_id.map(|id| id.to_string()).unwrap_or_default(),
        method_id: e.method_id.map(|id| id.to_string()).unwrap_or_default(),
        reset_id: e.reset_id.map(|id| id.to_string()).unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
        request_id: e.request_id.unwrap_or_default(),
        details: Some(json_struct(e.details)),
    }
}

/// A selection gap's subject.
pub fn gap_item(offer: Offer) -> pb::selection_gap::Item {
    use pb::selection_gap::Item;
    match offer {
        Offer::Action(a) => Item::Action(wire::<_, pb::Action>(a)),
        Offer::ResetScope(s) => Item::ResetScope(wire::<_, pb::ResetScope>(s)),
        Offer::MethodKind(k) => Item::MethodKind(wire::<_, pb::MethodKind>(k)),
    }
}

fn json_struct(map: serde_json::Map<String, Value>) -> Struct {
    Struct {
        fields: map.into_iter().map(|(k, v)| (k, json_value(v))).collect(),
    }
}

fn json_value(value: Value) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_struct(map)),
    };
    ProtoValue { kind: Some(kind) }
}
