//! The test PKI for RabbitMQ's TLS listener: a CA, a server certificate for the broker and a
//! client certificate for the guest, under [`TLS_DIR`].
//!
//! Generated with `rcgen` (ring), the same generator the TLS tests use for their refusal
//! cases, so the certificates' names and dates are set in code rather than in OpenSSL
//! configuration files. The `openssl` CLI only checks what exists (expiry, and that a leaf
//! was signed by the current CA), which needs no parser of ours. Certificates are made again
//! only when missing, expiring within [`RENEW_BEFORE_DAYS`], or not signed by the current CA.
//! Private keys are 0600: the CA's and the client's owned by root, the server's by the
//! `rabbitmq` user that reads it.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::layout::{MGMT_GATEWAY_ADDR, TLS_DIR};
use crate::sh::{run, say, succeeds};

/// Certificates closer than this to their end are made again.
const RENEW_BEFORE_DAYS: i64 = 30;
const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 825;
const CA_NAME: &str = "trove-netiso test CA";

/// What [`ensure`] did, so that the broker is restarted only when its files changed.
pub struct Outcome {
    /// The CA or the server certificate was (re)made: RabbitMQ must load them again.
    pub server_changed: bool,
}

/// Makes whatever is missing or expiring; leaves valid certificates alone.
pub fn ensure() -> Result<Outcome> {
    std::fs::create_dir_all(TLS_DIR).with_context(|| format!("cannot create {TLS_DIR}"))?;
    std::fs::set_permissions(TLS_DIR, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set the mode of {TLS_DIR}"))?;
    let ca_pem = path("ca.pem");
    let ca_key_pem = path("ca-key.pem");
    let ca_valid =
        Path::new(&ca_pem).exists() && Path::new(&ca_key_pem).exists() && not_expiring(&ca_pem);
    let ca_key = if ca_valid {
        let text = std::fs::read_to_string(&ca_key_pem)
            .with_context(|| format!("cannot read {ca_key_pem}"))?;
        KeyPair::from_pem(&text).with_context(|| format!("{ca_key_pem} is not a key"))?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_private(&ca_key_pem, &key.serialize_pem(), None)?;
        write_public(&ca_pem, &cert.pem())?;
        say(&format!("  made the test CA {ca_pem}"));
        key
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    let server_changed = ensure_leaf(
        &issuer,
        "server",
        "localhost",
        &[
            SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
            SanType::IpAddress(MGMT_GATEWAY_ADDR.parse()?),
            SanType::DnsName("localhost".try_into()?),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
        Some("rabbitmq"),
    )?;
    ensure_leaf(
        &issuer,
        "client",
        "trove-guest",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        None,
    )?;
    // Modes a hand edit may have loosened.
    for key in ["ca-key.pem", "server-key.pem", "client-key.pem"] {
        std::fs::set_permissions(path(key), std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set the mode of {}", path(key)))?;
    }
    Ok(Outcome {
        server_changed: server_changed || !ca_valid,
    })
}

/// `TLS_DIR/name`.
pub fn path(name: &str) -> String {
    format!("{TLS_DIR}/{name}")
}

/// The CA's subject and extensions; the same every time, so that a CA key read back from
/// disk signs leaves whose issuer matches `ca.pem`.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    params
}

/// Makes `<stem>.pem` and `<stem>-key.pem` unless the existing pair is valid, signed by the
/// current CA and not expiring. True when it made them.
fn ensure_leaf(
    issuer: &Issuer<'_, KeyPair>,
    stem: &str,
    common_name: &str,
    names: &[SanType],
    usage: ExtendedKeyUsagePurpose,
    key_owner: Option<&str>,
) -> Result<bool> {
    let cert_pem = path(&format!("{stem}.pem"));
    let key_pem = path(&format!("{stem}-key.pem"));
    if Path::new(&key_pem).exists()
        && not_expiring(&cert_pem)
        && succeeds(
            "openssl",
            &["verify", "-CAfile", &path("ca.pem"), &cert_pem],
        )
    {
        return Ok(false);
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = names.to_vec();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(LEAF_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_private(&key_pem, &key.serialize_pem(), key_owner)?;
    write_public(&cert_pem, &cert.pem())?;
    say(&format!("  made {cert_pem} and {key_pem}"));
    Ok(true)
}

/// Whether `cert` exists and is valid for at least [`RENEW_BEFORE_DAYS`] more days.
fn not_expiring(cert: &str) -> bool {
    let seconds = (RENEW_BEFORE_DAYS * 86_400).to_string();
    Path::new(cert).exists()
        && succeeds(
            "openssl",
            &["x509", "-checkend", &seconds, "-noout", "-in", cert],
        )
}

/// Writes a key 0600 from its first byte (a temporary file renamed into place), then hands
/// it to `owner` when given.
fn write_private(target: &str, text: &str, owner: Option<&str>) -> Result<()> {
    let temporary = format!("{target}.new");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {temporary}"))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {temporary}"))?;
    drop(file);
    if let Some(owner) = owner {
        run("chown", &[&format!("{owner}:{owner}"), &temporary])?;
    }
    std::fs::rename(&temporary, target).with_context(|| format!("cannot replace {target}"))
}

fn write_public(target: &str, text: &str) -> Result<()> {
    let temporary = format!("{target}.new");
    std::fs::write(&temporary, text).with_context(|| format!("cannot write {temporary}"))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&temporary, target).with_context(|| format!("cannot replace {target}"))
}
