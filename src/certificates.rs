//! The TLS listener's certificates as files (`tls_cert`/`tls_key`, and a
//! site's own in `[[sites]]`): [`CertFiles`], the [`CertPlan`] of the
//! default certificate and one per site, and [`load_pair`], which reads one
//! pair and checks that they belong together. `config` checks the files
//! with it at start and `listener::tls` serves them, so `config` needs
//! nothing of the listener (which reads `config`).

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificates to serve: the default and one per site domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPlan {
    pub default: CertFiles,
    /// Lowercase domain → its files.
    pub sites: Vec<(String, CertFiles)>,
}

/// One certificate chain and its private key, checked to belong together.
pub fn load_pair(files: &CertFiles) -> Result<CertifiedKey, String> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    crate::upstream::install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default()
        .ok_or("no TLS crypto provider")?
        .clone();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        format!(
            "{} and {} do not make a certificate and its key: {e}",
            files.cert.display(),
            files.key.display()
        )
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{} holds no PEM private key: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> CertFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a.test");
        let b = pair(dir.path(), "b.test");
        assert!(load_pair(&a).is_ok());
        let mixed = CertFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = load_pair(&mixed).unwrap_err();
        assert!(e.contains("a.test.pem"), "{e}");
        let missing = CertFiles {
            cert: dir.path().join("none.pem"),
            key: a.key,
        };
        assert!(load_pair(&missing).unwrap_err().contains("cannot read"));
        std::fs::write(dir.path().join("empty.pem"), "x").unwrap();
        let empty = CertFiles {
            cert: dir.path().join("empty.pem"),
            key: b.key,
        };
        assert!(load_pair(&empty)
            .unwrap_err()
            .contains("no PEM certificate"));
    }
}
