//! Test certificates made with the openssl CLI (a CA and leaves it signs),
//! for rpcaps:// tests of the agent and the sensor.

use std::path::Path;
use std::process::Command;

/// Runs openssl with `args` in `dir`; panics with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e} (scripts/setup.sh installs it)"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA named `name` in `dir` (name.pem, name.key) and `leaves` signed by it:
/// (file stem, extended key usage: serverAuth or clientAuth), each with the
/// subjectAltNames `sans` (e.g. `DNS:localhost,IP:127.0.0.1`).
pub fn make_ca(dir: &Path, name: &str, leaves: &[(&str, &str)], sans: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN=xrpcap test CA {name}");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-days", "2", "-subj", &subject, "-keyout", &key, "-out", &pem,
    ]);
    args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &args);
    for (stem, usage) in leaves {
        let (lkey, csr, lpem, ext) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.pem"),
            format!("{stem}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName={sans}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-subj", "/CN=localhost", "-keyout", &lkey, "-out", &csr]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &pem,
                "-CAkey",
                &key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &lpem,
            ],
        );
    }
}

/// The SHA-256 fingerprint of the certificate in `pem` (DER digest), as
/// `openssl x509 -fingerprint -sha256` prints it: `AB:CD:…`.
pub fn fingerprint(pem: &Path) -> String {
    let dir = pem.parent().unwrap_or(Path::new("."));
    let out = openssl(
        dir,
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            pem.to_str().unwrap(),
        ],
    );
    out.trim()
        .rsplit_once('=')
        .map(|(_, f)| f.to_string())
        .unwrap_or_else(|| panic!("openssl fingerprint: {out}"))
}

/// The public key pin of the certificate in `pem`, as curl's
/// `--pinnedpubkey` and xrpcap-sensor's `--tls-pin` take it:
/// `sha256//` and the base64 of the SHA-256 of its SubjectPublicKeyInfo
/// (DER). Computed by openssl, independently of the sensor's code.
pub fn spki_pin(pem: &Path) -> String {
    let dir = pem.parent().unwrap_or(Path::new("."));
    let pubkey = dir.join(format!(
        "{}.pub.der",
        pem.file_stem().unwrap().to_string_lossy()
    ));
    let pubpem = openssl(
        dir,
        &["x509", "-in", pem.to_str().unwrap(), "-pubkey", "-noout"],
    );
    let pubpem_path = pubkey.with_extension("pem");
    std::fs::write(&pubpem_path, pubpem).unwrap();
    openssl(
        dir,
        &[
            "pkey",
            "-pubin",
            "-in",
            pubpem_path.to_str().unwrap(),
            "-outform",
            "der",
            "-out",
            pubkey.to_str().unwrap(),
        ],
    );
    let b64 = openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-binary",
            "-out",
            "spki.sha256",
            pubkey.to_str().unwrap(),
        ],
    );
    assert!(b64.is_empty());
    let b64 = openssl(dir, &["base64", "-A", "-in", "spki.sha256"]);
    format!("sha256//{}", b64.trim())
}

/// A new certificate `new_stem.pem` for the key of `stem` (its CSR and
/// extensions as `make_ca` left them), signed by CA `ca` again: another
/// certificate (serial, dates), the same public key.
pub fn reissue(dir: &Path, ca: &str, stem: &str, new_stem: &str) {
    let (csr, ext, out) = (
        format!("{stem}.csr"),
        format!("{stem}.ext"),
        format!("{new_stem}.pem"),
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &out,
        ],
    );
}
