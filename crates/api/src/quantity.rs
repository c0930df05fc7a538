//! Kubernetes resource quantities (`2`, `500m`, `1.5`, `2Gi`, `5G`, `129e6`): read exactly,
//! rounded up where a whole number is needed, and written back in Kubernetes' short forms.

use thiserror::Error;

/// Why a Kubernetes quantity could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    /// The text is not a quantity (`2`, `500m`, `1.5`, `2Gi`, `5G`, `129e6`, ...).
    #[error("{what} quantity {value:?} is not valid: {reason}")]
    Invalid {
        /// What was measured: `cpu`, `memory`, or a device name.
        what: &'static str,
        /// The text given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The quantity is too large to use.
    #[error("{what} quantity {value:?} is too large")]
    TooLarge {
        /// What was measured: `cpu`, `memory`, or a device name.
        what: &'static str,
        /// The text given.
        value: String,
    },
}

/// A parsed quantity as the exact fraction `num / den`.
struct Ratio {
    num: u128,
    den: u128,
}

fn parse_quantity(what: &'static str, text: &str) -> Result<Ratio, QuantityError> {
    let invalid = |reason| QuantityError::Invalid {
        what,
        value: text.to_string(),
        reason,
    };
    let too_large = || QuantityError::TooLarge {
        what,
        value: text.to_string(),
    };
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return Err(invalid("it is empty"));
    }
    if s.starts_with('-') {
        return Err(invalid("it is negative"));
    }
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(invalid("it has no digits"));
    }
    if frac_part.contains('.') {
        return Err(invalid("it has more than one '.'"));
    }
    let mut num: u128 = 0;
    for digit in int_part.bytes().chain(frac_part.bytes()) {
        num = num
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(digit - b'0')))
            .ok_or_else(too_large)?;
    }
    let mut den: u128 = 10u128
        .checked_pow(frac_part.len() as u32)
        .ok_or_else(too_large)?;

    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        other => {
            let exponent = other
                .strip_prefix(['e', 'E'])
                .ok_or_else(|| invalid("its unit is unknown"))?;
            let exponent: i32 = exponent
                .parse()
                .map_err(|_| invalid("its exponent is not a whole number"))?;
            if exponent.unsigned_abs() > 30 {
                return Err(too_large());
            }
            let scale = 10u128.pow(exponent.unsigned_abs());
            if exponent >= 0 {
                (scale, 1)
            } else {
                (1, scale)
            }
        }
    };
    num = num.checked_mul(mul).ok_or_else(too_large)?;
    den = den.checked_mul(div).ok_or_else(too_large)?;
    Ok(Ratio { num, den })
}

fn ceil_div(num: u128, den: u128) -> u128 {
    num.div_ceil(den)
}

/// Whole CPUs for a Kubernetes cpu quantity, rounded up: `"2"` → 2, `"500m"` → 1,
/// `"1.5"` → 2, `"0"` → 0.
pub fn parse_cpu_quantity(text: &str) -> Result<u32, QuantityError> {
    let q = parse_quantity("cpu", text)?;
    u32::try_from(ceil_div(q.num, q.den)).map_err(|_| QuantityError::TooLarge {
        what: "cpu",
        value: text.to_string(),
    })
}

/// Milli-CPUs for a Kubernetes cpu quantity, rounded up: `"2"` → 2000, `"500m"` → 500.
pub fn parse_cpu_millis(text: &str) -> Result<u64, QuantityError> {
    let q = parse_quantity("cpu", text)?;
    let millis = q
        .num
        .checked_mul(1000)
        .ok_or_else(|| QuantityError::TooLarge {
            what: "cpu",
            value: text.to_string(),
        })?;
    u64::try_from(ceil_div(millis, q.den)).map_err(|_| QuantityError::TooLarge {
        what: "cpu",
        value: text.to_string(),
    })
}

/// Bytes for a Kubernetes memory quantity, rounded up: `"2Gi"` → 2147483648,
/// `"5G"` → 5000000000, `"512Mi"`, `"129e6"`, or plain bytes.
pub fn parse_memory_quantity(text: &str) -> Result<u64, QuantityError> {
    let q = parse_quantity("memory", text)?;
    u64::try_from(ceil_div(q.num, q.den)).map_err(|_| QuantityError::TooLarge {
        what: "memory",
        value: text.to_string(),
    })
}

/// A count of whole devices (GPUs, TPUs), rounded up as Kubernetes' `Quantity.Value()` does.
pub fn parse_count(what: &'static str, text: &str) -> Result<u64, QuantityError> {
    let q = parse_quantity(what, text)?;
    u64::try_from(ceil_div(q.num, q.den)).map_err(|_| QuantityError::TooLarge {
        what,
        value: text.to_string(),
    })
}

/// A quantity as a float (Kubernetes' `AsApproximateFloat64`): `"500m"` → 0.5.
pub fn parse_amount(what: &'static str, text: &str) -> Result<f64, QuantityError> {
    let q = parse_quantity(what, text)?;
    // Precision loss is the point of "approximate".
    #[allow(clippy::cast_precision_loss)]
    Ok(q.num as f64 / q.den as f64)
}

/// A milli-CPU amount as Kubernetes writes it: `"3"` for whole CPUs, `"2500m"` otherwise.
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// A byte amount in the shortest binary form that is exact: `"6Gi"`, `"512Mi"`, else bytes.
pub fn format_memory_bytes(bytes: u64) -> String {
    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;
    if bytes > 0 && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu_quantity("2"), Ok(2));
        assert_eq!(parse_cpu_quantity("500m"), Ok(1));
        assert_eq!(parse_cpu_quantity("1500m"), Ok(2));
        assert_eq!(parse_cpu_quantity("2000m"), Ok(2));
        assert_eq!(parse_cpu_quantity("1.5"), Ok(2));
        assert_eq!(parse_cpu_quantity("0"), Ok(0));
        assert_eq!(parse_cpu_quantity(" 4 "), Ok(4));
        assert_eq!(parse_cpu_quantity("+1"), Ok(1));
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis("0.1"), Ok(100));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        let err = parse_cpu_quantity("two").unwrap_err();
        assert!(err.to_string().contains("\"two\""), "{err}");
        assert!(matches!(
            parse_cpu_quantity("-1"),
            Err(QuantityError::Invalid {
                reason: "it is negative",
                ..
            })
        ));
        assert!(matches!(
            parse_cpu_quantity(""),
            Err(QuantityError::Invalid { .. })
        ));
        assert!(matches!(
            parse_cpu_quantity("1.2.3"),
            Err(QuantityError::Invalid { .. })
        ));
        assert!(matches!(
            parse_cpu_quantity("99999999999"),
            Err(QuantityError::TooLarge { .. })
        ));
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory_quantity("2Gi"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_memory_quantity("5G"), Ok(5_000_000_000));
        assert_eq!(parse_memory_quantity("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_memory_quantity("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_memory_quantity("128974848"), Ok(128_974_848));
        assert_eq!(parse_memory_quantity("129e6"), Ok(129_000_000));
        assert_eq!(parse_memory_quantity("129E6"), Ok(129_000_000));
        assert_eq!(parse_memory_quantity("123Mi"), Ok(128_974_848));
        assert_eq!(parse_memory_quantity("100k"), Ok(100_000));
        assert_eq!(parse_memory_quantity("1Ki"), Ok(1024));
        assert_eq!(parse_memory_quantity("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_memory_quantity("1500m"), Ok(2));
        let err = parse_memory_quantity("2GB").unwrap_err();
        assert!(err.to_string().contains("memory quantity \"2GB\""), "{err}");
        assert!(matches!(
            parse_memory_quantity("1e99"),
            Err(QuantityError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_memory_quantity("20Ei"),
            Err(QuantityError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_memory_quantity("Gi"),
            Err(QuantityError::Invalid { .. })
        ));
    }

    #[test]
    fn amounts_and_counts() {
        assert_eq!(parse_amount("gpu", "2"), Ok(2.0));
        assert_eq!(parse_amount("gpu", "500m"), Ok(0.5));
        assert_eq!(parse_count("gpu", "500m"), Ok(1));
        assert!(parse_count("gpu", "1Gx").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_cpu_millis(3000), "3");
        assert_eq!(format_cpu_millis(2500), "2500m");
        assert_eq!(format_cpu_millis(0), "0");
        assert_eq!(format_memory_bytes(6 << 30), "6Gi");
        assert_eq!(format_memory_bytes(512 << 20), "512Mi");
        assert_eq!(format_memory_bytes(1000), "1000");
        assert_eq!(format_memory_bytes(0), "0");
    }
}
