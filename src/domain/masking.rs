//! Masking of method labels. Phone numbers and e-mail addresses are contact data:
//! they never leave the service (or reach a log) unmasked.

use super::model::MethodKind;

const MASK: char = '•';

/// The label as it may be shown: `+1 ••• ••• 4567`, `v•••@example.com`,
/// `serial ••••2231`. Labels of other kinds are device or app names, but an
/// authenticator's label often embeds an account (`Issuer:alice@corp.com`), so any
/// e-mail address or long number inside them is masked too.
pub fn mask_label(kind: MethodKind, label: &str) -> String {
    match kind {
        MethodKind::Phone => mask_phone(label),
        MethodKind::Email => mask_email(label),
        MethodKind::HardwareOath => mask_serial(label),
        _ => mask_embedded(label),
    }
}

/// Digits a number must have, beyond its country code, for its last four to be shown:
/// then at least four stay hidden.
const MIN_DIGITS_TO_SHOW_LAST_FOUR: usize = 8;

/// Keeps a leading `+country` group (one to three digits followed by a separator) and,
/// for a long enough number, the last four digits; every other digit becomes a mask, so
/// the shape of the number stays readable. `+15551234567` has no separator, so only its
/// last four digits show.
fn mask_phone(label: &str) -> String {
    let total_digits = label.chars().filter(char::is_ascii_digit).count();
    let country_digits = match label.strip_prefix('+') {
        Some(rest) => {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let separated = rest
                .chars()
                .nth(digits)
                .is_some_and(|c| !c.is_ascii_digit());
            if (1..=3).contains(&digits) && separated {
                digits
            } else {
                0
            }
        }
        None => 0,
    };
    let keep_last = if total_digits - country_digits >= MIN_DIGITS_TO_SHOW_LAST_FOUR {
        4
    } else {
        0
    };
    let mut seen = 0;
    label
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen <= country_digits || seen > total_digits - keep_last {
                c
            } else {
                MASK
            }
        })
        .collect()
}

/// Masks the e-mail addresses (keeping an `Issuer:` prefix) and long numbers in a
/// free-form label; other words stay as they are.
fn mask_embedded(label: &str) -> String {
    label
        .split(' ')
        .map(|word| {
            if word.contains('@') {
                match word.rsplit_once(':') {
                    Some((prefix, address)) => format!("{prefix}:{}", mask_email(address)),
                    None => mask_email(word),
                }
            } else if word.chars().filter(char::is_ascii_digit).count() >= 7 {
                mask_phone(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Keeps the first character of the local part and the domain.
fn mask_email(label: &str) -> String {
    match label.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}{MASK}{MASK}{MASK}@{domain}")
        }
        None => MASK.to_string().repeat(3),
    }
}

/// Keeps the words before the serial number and its last four characters.
fn mask_serial(label: &str) -> String {
    let (prefix, serial) = match label.rsplit_once(' ') {
        Some((prefix, serial)) => (format!("{prefix} "), serial),
        None => (String::new(), label),
    };
    let count = serial.chars().count();
    let tail: String = serial.chars().skip(count.saturating_sub(4)).collect();
    if count <= 4 {
        return format!("{prefix}{}", MASK.to_string().repeat(count));
    }
    format!("{prefix}{}{tail}", MASK.to_string().repeat(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_contact_data_like_the_design_shows() {
        use MethodKind::*;
        for (kind, label, shown) in [
            (Phone, "+1 555 123 4567", "+1 ••• ••• 4567"),
            (Phone, "+44 20 7946 0958", "+44 •• •••• 0958"),
            (Phone, "+15551234567", "+•••••••4567"),
            (Phone, "+4915112345678", "+•••••••••5678"),
            (Phone, "0151 12345678", "•••• ••••5678"),
            (Phone, "+1 4567", "+1 ••••"),
            (Phone, "123", "•••"),
            (Email, "victor@example.com", "v•••@example.com"),
            (Email, "nonsense", "•••"),
            (HardwareOath, "serial 88412231", "serial ••••2231"),
            (HardwareOath, "2231", "••••"),
            (
                AuthenticatorApp,
                "Acme:alice@corp.com",
                "Acme:a•••@corp.com",
            ),
            (AuthenticatorApp, "Pixel 8", "Pixel 8"),
            (SoftwareOath, "Bank 5551234567", "Bank ••••••4567"),
            (Fido2, "YubiKey 5", "YubiKey 5"),
            (RecoveryCodes, "8 codes left", "8 codes left"),
        ] {
            assert_eq!(mask_label(kind, label), shown, "{kind} {label:?}");
        }
    }
}
