//! Webhook signature verification over raw request bytes, fail-closed and constant-time.
//!
//! * PagerDuty v3: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>…]`, HMAC-SHA256(secret, body);
//!   any `v1` entry may match (secret rotation); other versions are ignored.
//! * Slack v0: `X-Slack-Signature: v0=<hex>` over `v0:{timestamp}:{body}`, and the timestamp
//!   must be within five minutes of now.
//!
//! Cost before authentication is bounded: the header is refused unread above
//! [`MAX_SIGNATURE_HEADER_BYTES`] or [`MAX_SIGNATURE_ENTRIES`] entries, and the body is hashed
//! once per configured secret, whatever the number of entries (each entry is compared against
//! that one MAC). The caller caps the body before calling (`intake::MAX_BODY`), so an unsigned
//! request costs at most `secrets × HMAC(MAX_BODY)`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Slack's replay window.
pub const SLACK_MAX_SKEW_SECS: i64 = 300;

/// Entries a PagerDuty signature header may carry. PagerDuty sends one per active secret of the
/// subscription (two during a rotation); eight leaves room for every rotation we know of.
pub const MAX_SIGNATURE_ENTRIES: usize = 8;

/// Longest signature header accepted: eight `v1=` entries (67 bytes each) with separators and
/// spaces fit; anything longer is refused before it is split or decoded.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 1024;

/// Why a signature was refused. Messages never include secrets or expected signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is missing or empty")]
    MissingHeader,
    #[error("no signing secret is configured")]
    NoSecret,
    #[error("signature header has no entry with a supported version")]
    UnsupportedVersion,
    #[error("signature header is malformed")]
    Malformed,
    #[error("signature header is longer than {MAX_SIGNATURE_HEADER_BYTES} bytes")]
    HeaderTooLong,
    #[error("signature header has more than {MAX_SIGNATURE_ENTRIES} entries")]
    TooManyEntries,
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp header is missing or not a number")]
    BadTimestamp,
    #[error("timestamp is {skew_secs} s away from now (allowed: 300 s)")]
    Stale { skew_secs: i64 },
}

fn hmac_for(secret: &[u8]) -> Option<HmacSha256> {
    if secret.is_empty() {
        return None;
    }
    HmacSha256::new_from_slice(secret).ok()
}

/// Parse one `vN=<hex>` entry: the decoded MAC if the version is `version`, `None` for another
/// version. Only 64 hex digits can be a SHA-256 MAC, so longer text is refused undecoded.
fn parse_entry(entry: &str, version: &str) -> Result<Option<[u8; 32]>, SignatureError> {
    let entry = entry.trim();
    let Some((tag, hex_part)) = entry.split_once('=') else {
        return Err(SignatureError::Malformed);
    };
    if tag != version {
        return Ok(None);
    }
    let mut mac = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut mac).map_err(|_| SignatureError::Malformed)?;
    Ok(Some(mac))
}

/// The `v1` MACs of a PagerDuty signature header, refused before any hashing when the header is
/// too long or has too many entries. Entries of other versions are skipped; a malformed entry
/// is skipped when another entry is usable (a rotation header may mix formats).
pub fn pagerduty_candidates(header: Option<&str>) -> Result<Vec<[u8; 32]>, SignatureError> {
    // The raw length: padding counts, it costs as much to read as anything else.
    if header.is_some_and(|h| h.len() > MAX_SIGNATURE_HEADER_BYTES) {
        return Err(SignatureError::HeaderTooLong);
    }
    let header = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(SignatureError::MissingHeader)?;
    let entries: Vec<&str> = header.split(',').filter(|e| !e.trim().is_empty()).collect();
    if entries.len() > MAX_SIGNATURE_ENTRIES {
        return Err(SignatureError::TooManyEntries);
    }
    let mut candidates = Vec::with_capacity(entries.len());
    let mut malformed = false;
    for entry in entries {
        match parse_entry(entry, "v1") {
            Ok(Some(sig)) => candidates.push(sig),
            Ok(None) => {}
            Err(_) => malformed = true,
        }
    }
    if candidates.is_empty() {
        return Err(if malformed { SignatureError::Malformed } else { SignatureError::UnsupportedVersion });
    }
    Ok(candidates)
}

/// Verify a PagerDuty v3 webhook. `secrets` holds every currently valid subscription secret.
pub fn verify_pagerduty<S: AsRef<[u8]>>(
    secrets: &[S],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    if header.is_some_and(|h| h.len() > MAX_SIGNATURE_HEADER_BYTES) {
        return Err(SignatureError::HeaderTooLong);
    }
    if header.map(str::trim).is_none_or(str::is_empty) {
        return Err(SignatureError::MissingHeader);
    }
    let secrets: Vec<&[u8]> = secrets.iter().map(AsRef::as_ref).filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let candidates = pagerduty_candidates(header)?;
    for secret in secrets {
        let Some(mut mac) = hmac_for(secret) else { continue };
        // The body is hashed once per secret; each entry is compared against that MAC.
        mac.update(body);
        for candidate in &candidates {
            // `verify_slice` compares in constant time; the clone copies the hash state only.
            if mac.clone().verify_slice(candidate).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// Compute a PagerDuty `v1=` signature entry (for simulators and `replay-webhook`).
pub fn sign_pagerduty(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac_for(secret).unwrap_or_else(|| {
        // An empty key is valid for HMAC itself; only verification refuses it.
        HmacSha256::new_from_slice(b"\0").expect("HMAC accepts any key length")
    });
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verify a Slack request. `now_unix` is injected so tests and `--at` can pin the clock.
pub fn verify_slack(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    if signature.is_some_and(|s| s.len() > MAX_SIGNATURE_HEADER_BYTES) {
        return Err(SignatureError::HeaderTooLong);
    }
    let signature = signature.map(str::trim).filter(|s| !s.is_empty()).ok_or(SignatureError::MissingHeader)?;
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let ts_str = timestamp.map(str::trim).ok_or(SignatureError::BadTimestamp)?;
    let ts: i64 = ts_str.parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now_unix.saturating_sub(ts);
    if skew.abs() > SLACK_MAX_SKEW_SECS {
        return Err(SignatureError::Stale { skew_secs: skew });
    }
    let expected = match parse_entry(signature, "v0")? {
        Some(bytes) => bytes,
        None => return Err(SignatureError::UnsupportedVersion),
    };
    let mut mac = hmac_for(secret).ok_or(SignatureError::NoSecret)?;
    mac.update(b"v0:");
    mac.update(ts_str.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| SignatureError::Mismatch)
}

/// Compute a Slack `v0=` signature (for the Slack simulator's clicks).
pub fn sign_slack(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| HmacSha256::new_from_slice(b"\0").expect("HMAC accepts any key length"));
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL_BODY: &[u8] = br#"{"event":{"id":"01TEST","event_type":"incident.annotated"}}"#;
    const SIG_LOCAL: &str = "v1=4a3e86e29ec650029adb6a6c10cc200ad6503212d78595b58302bdc279ff0ab6";
    const SIG_OLD: &str = "v1=de3685f2900734012fca787d84e1514269071fb6831f715b1ad6edf2d5fb55f1";

    const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: &str = "1531420618";
    const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn pagerduty_official_vector() {
        let body = include_bytes!("../tests/fixtures/pagerduty_priority_updated.json");
        assert_eq!(
            crate::sha256_hex(body),
            "6ef42c69dbbc0feaff02e04ca31f497cb2bcbecf1a038a636f114cd7cdd2e23a",
            "fixture must be the byte-exact go-pagerduty test body"
        );
        let secret = "lDQHScfUeXUKaQRNF+8XIiDKZ7XX3itBAYzwU0TARw8lJqRnkKl2iB1anSb0Z+IK";
        let valid = "v1=0c0b9495b893a39e70d1fea2fe11fbe0a825f88b9f67846f6cc07dd2bc5476cd";
        let invalid = "v1=7020c8a7ec668a9b7012bc3dd82e483394b038f4230acc6785efbf2a7d8bcaf5";
        assert_eq!(verify_pagerduty(&[secret], Some(valid), body), Ok(()));
        assert_eq!(verify_pagerduty(&[secret], Some(invalid), body), Err(SignatureError::Mismatch));
    }

    #[test]
    fn pagerduty_local_vectors() {
        assert_eq!(SMALL_BODY.len(), 59);
        assert_eq!(verify_pagerduty(&["whsec-local-test"], Some(SIG_LOCAL), SMALL_BODY), Ok(()));
        assert_eq!(verify_pagerduty(&["whsec-old-secret"], Some(SIG_OLD), SMALL_BODY), Ok(()));
        assert_eq!(sign_pagerduty(b"whsec-local-test", SMALL_BODY), SIG_LOCAL);
    }

    #[test]
    fn pagerduty_rotation_header_accepts_either_secret() {
        let header = format!("{SIG_LOCAL},{SIG_OLD}");
        assert_eq!(verify_pagerduty(&["whsec-local-test"], Some(&header), SMALL_BODY), Ok(()));
        assert_eq!(verify_pagerduty(&["whsec-old-secret"], Some(&header), SMALL_BODY), Ok(()));
        let spaced = format!("{SIG_OLD}, {SIG_LOCAL}");
        assert_eq!(verify_pagerduty(&["whsec-local-test"], Some(&spaced), SMALL_BODY), Ok(()));
        // Several configured secrets, one header entry.
        assert_eq!(verify_pagerduty(&["nope", "whsec-old-secret"], Some(SIG_OLD), SMALL_BODY), Ok(()));
    }

    #[test]
    fn pagerduty_fails_closed() {
        let tampered = br#"{"event":{"id":"01TEST","event_type":"incident.annotateD"}}"#;
        assert_eq!(verify_pagerduty(&["whsec-local-test"], Some(SIG_LOCAL), tampered), Err(SignatureError::Mismatch));
        assert_eq!(verify_pagerduty(&["whsec-local-test"], None, SMALL_BODY), Err(SignatureError::MissingHeader));
        assert_eq!(verify_pagerduty(&["whsec-local-test"], Some("  "), SMALL_BODY), Err(SignatureError::MissingHeader));
        assert_eq!(verify_pagerduty::<&str>(&[], Some(SIG_LOCAL), SMALL_BODY), Err(SignatureError::NoSecret));
        assert_eq!(verify_pagerduty(&[""], Some(SIG_LOCAL), SMALL_BODY), Err(SignatureError::NoSecret));
        let v2 = SIG_LOCAL.replacen("v1=", "v2=", 1);
        assert_eq!(
            verify_pagerduty(&["whsec-local-test"], Some(&v2), SMALL_BODY),
            Err(SignatureError::UnsupportedVersion)
        );
        assert_eq!(verify_pagerduty(&["whsec-local-test"], Some("v1=zz"), SMALL_BODY), Err(SignatureError::Malformed));
        assert_eq!(
            verify_pagerduty(&["whsec-local-test"], Some("v1=abcd"), SMALL_BODY),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_pagerduty(&["whsec-local-test"], Some("garbage"), SMALL_BODY),
            Err(SignatureError::Malformed)
        );
        assert_eq!(verify_pagerduty(&["wrong-secret"], Some(SIG_LOCAL), SMALL_BODY), Err(SignatureError::Mismatch));
        // An unknown version next to a valid entry is ignored, not fatal.
        let mixed = format!("v9=00,{SIG_LOCAL}");
        assert_eq!(verify_pagerduty(&["whsec-local-test"], Some(&mixed), SMALL_BODY), Ok(()));
    }

    #[test]
    fn pagerduty_header_bounds_are_checked_before_hashing() {
        // At the cap, the genuine entry last: accepted.
        let mut entries: Vec<String> = (0..MAX_SIGNATURE_ENTRIES - 1).map(|i| format!("v1={:064x}", i)).collect();
        entries.push(SIG_LOCAL.to_string());
        assert_eq!(verify_pagerduty(&["whsec-local-test"], Some(&entries.join(",")), SMALL_BODY), Ok(()));
        // One entry over the cap: refused, even with the genuine entry in it.
        entries.insert(0, SIG_OLD.to_string());
        assert_eq!(
            verify_pagerduty(&["whsec-local-test"], Some(&entries.join(",")), SMALL_BODY),
            Err(SignatureError::TooManyEntries)
        );
        // Entries of any version count (they cost a split and a compare each).
        let mixed: Vec<String> = (0..=MAX_SIGNATURE_ENTRIES).map(|i| format!("v9={i}")).collect();
        assert_eq!(pagerduty_candidates(Some(&mixed.join(","))), Err(SignatureError::TooManyEntries));
        // A long header is refused before it is split.
        let long = format!("{SIG_LOCAL},{}", " ".repeat(MAX_SIGNATURE_HEADER_BYTES));
        assert_eq!(
            verify_pagerduty(&["whsec-local-test"], Some(&long), SMALL_BODY),
            Err(SignatureError::HeaderTooLong)
        );
        // An entry longer than a SHA-256 MAC is malformed, not decoded.
        assert_eq!(pagerduty_candidates(Some(&format!("v1={}", "ab".repeat(300)))), Err(SignatureError::Malformed));
        assert_eq!(pagerduty_candidates(Some(&format!("{SIG_LOCAL},{SIG_OLD}"))).map(|c| c.len()), Ok(2));
    }

    #[test]
    fn slack_header_length_is_bounded() {
        let long = format!("{SLACK_SIG}{}", "0".repeat(MAX_SIGNATURE_HEADER_BYTES));
        assert_eq!(
            verify_slack(SLACK_SECRET, Some(SLACK_TS), Some(&long), SLACK_BODY, 1531420618),
            Err(SignatureError::HeaderTooLong)
        );
    }

    #[test]
    fn slack_official_vector() {
        assert_eq!(SLACK_BODY.len(), 362);
        let now = 1531420618;
        assert_eq!(verify_slack(SLACK_SECRET, Some(SLACK_TS), Some(SLACK_SIG), SLACK_BODY, now), Ok(()));
        assert_eq!(sign_slack(SLACK_SECRET, now, SLACK_BODY), SLACK_SIG);
    }

    #[test]
    fn slack_window_and_tampering() {
        let ts = 1531420618;
        let ok = |now| verify_slack(SLACK_SECRET, Some(SLACK_TS), Some(SLACK_SIG), SLACK_BODY, now);
        assert_eq!(ok(ts + 300), Ok(()));
        assert_eq!(ok(ts - 300), Ok(()));
        assert_eq!(ok(ts + 301), Err(SignatureError::Stale { skew_secs: 301 }));
        assert_eq!(ok(ts - 301), Err(SignatureError::Stale { skew_secs: -301 }));
        let mut tampered = SLACK_BODY.to_vec();
        tampered[0] = b'T';
        assert_eq!(
            verify_slack(SLACK_SECRET, Some(SLACK_TS), Some(SLACK_SIG), &tampered, ts),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_slack(b"", Some(SLACK_TS), Some(SLACK_SIG), SLACK_BODY, ts), Err(SignatureError::NoSecret));
        assert_eq!(
            verify_slack(SLACK_SECRET, None, Some(SLACK_SIG), SLACK_BODY, ts),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_slack(SLACK_SECRET, Some("abc"), Some(SLACK_SIG), SLACK_BODY, ts),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_slack(SLACK_SECRET, Some(SLACK_TS), None, SLACK_BODY, ts),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            verify_slack(SLACK_SECRET, Some(SLACK_TS), Some(&SLACK_SIG.replace("v0=", "v1=")), SLACK_BODY, ts),
            Err(SignatureError::UnsupportedVersion)
        );
        assert_eq!(
            verify_slack(SLACK_SECRET, Some(SLACK_TS), Some("v0=nothex"), SLACK_BODY, ts),
            Err(SignatureError::Malformed)
        );
        // Signed for a different timestamp: the timestamp is part of the signed string.
        assert_eq!(
            verify_slack(SLACK_SECRET, Some("1531420619"), Some(SLACK_SIG), SLACK_BODY, ts),
            Err(SignatureError::Mismatch)
        );
    }
}
