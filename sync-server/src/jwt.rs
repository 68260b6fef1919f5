//! Bearer tokens that are JSON Web Tokens (RFC 7519), verified with `jsonwebtoken`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::TokenVerifier;

/// A [`TokenVerifier`] for JSON Web Tokens (RFC 7519) signed by an identity provider:
/// the token's signature, expiry (`exp`, required), not-before time (`nbf`, if present),
/// issuer and audience (if configured) are checked, and one claim names the principal
/// the request acts for (`sub` by default). A token that fails any check is 401.
///
/// Built on the `jsonwebtoken` crate (its pure-Rust `rust_crypto` backend). One
/// algorithm per verifier, chosen by the key: HS256 with a shared secret, RS256 with an
/// RSA public key, ES256 with a P-256 public key, EdDSA with an Ed25519 public key (keys
/// in PEM). A token whose header names another algorithm is refused (no algorithm
/// confusion).
///
/// ```
/// use sync_server::JwtVerifier;
///
/// let verifier = JwtVerifier::hs256(b"a secret of at least 32 bytes, please")
///     .issuer("https://id.example.com/")
///     .audience("tasks-api")
///     .principal_claim("sub");
/// # let _ = verifier;
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway_seconds", &self.validation.leeway)
            .field("principal_claim", &self.claim)
            .finish_non_exhaustive()
    }
}

/// A key that could not be read (see [`JwtVerifier::rs256_pem`] and its siblings).
#[derive(Debug, thiserror::Error)]
#[error("the JSON Web Token key is not a valid {what} in PEM: {source}")]
pub struct JwtKeyError {
    what: &'static str,
    #[source]
    source: jsonwebtoken::errors::Error,
}

impl JwtVerifier {
    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 60;
        validation.validate_nbf = true;
        JwtVerifier {
            key,
            validation,
            claim: "sub".into(),
        }
    }

    /// Tokens signed with HMAC-SHA256 under `secret` (HS256). RFC 7518 section 3.2 asks
    /// for a secret of at least 32 bytes.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Tokens signed with RSASSA-PKCS1-v1_5 and SHA-256 (RS256), verified with this RSA
    /// public key (PEM, `-----BEGIN PUBLIC KEY-----` or `-----BEGIN RSA PUBLIC KEY-----`).
    ///
    /// # Errors
    /// [`JwtKeyError`] if `pem` is not an RSA public key in PEM.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|source| JwtKeyError {
            what: "RSA public key",
            source,
        })?;
        Ok(Self::with(key, Algorithm::RS256))
    }

    /// Tokens signed with ECDSA on P-256 and SHA-256 (ES256), verified with this public
    /// key (PEM, `-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// [`JwtKeyError`] if `pem` is not an elliptic-curve public key in PEM.
    pub fn es256_pem(pem: &[u8]) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_ec_pem(pem).map_err(|source| JwtKeyError {
            what: "P-256 public key",
            source,
        })?;
        Ok(Self::with(key, Algorithm::ES256))
    }

    /// Tokens signed with Ed25519 (EdDSA), verified with this public key (PEM,
    /// `-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    /// [`JwtKeyError`] if `pem` is not an Ed25519 public key in PEM.
    pub fn ed25519_pem(pem: &[u8]) -> Result<Self, JwtKeyError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(|source| JwtKeyError {
            what: "Ed25519 public key",
            source,
        })?;
        Ok(Self::with(key, Algorithm::EdDSA))
    }

    /// Requires the `iss` claim to be `issuer`.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self
    }

    /// Requires the `aud` claim to name `audience` (a token with an `aud` claim is
    /// refused unless an audience is configured).
    pub fn audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self
    }

    /// The claim that names the principal (default `sub`): a non-empty string, or the
    /// token is refused.
    pub fn principal_claim(mut self, claim: &str) -> Self {
        self.claim = claim.to_string();
        self
    }

    /// How far past `exp` (or before `nbf`) a token is still taken, in seconds, for
    /// clocks that differ between the identity provider and the server (default 60).
    pub fn leeway_seconds(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    /// The principal of `token`, or why it is refused (the text of `jsonwebtoken`'s
    /// error, or the missing claim). [`TokenVerifier::verify`] logs the reason at debug
    /// level and answers `None`.
    ///
    /// # Errors
    /// A message saying why the token is refused: a bad signature, an expired token, a
    /// wrong issuer or audience, another algorithm, or no principal claim.
    pub fn principal(&self, token: &str) -> Result<String, String> {
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .map_err(|e| e.to_string())?;
        match data.claims.get(&self.claim) {
            Some(serde_json::Value::String(p)) if !p.is_empty() => Ok(p.clone()),
            _ => Err(format!(
                "the token has no `{}` claim holding a principal (a non-empty string)",
                self.claim
            )),
        }
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify(&self, token: &str) -> Option<String> {
        match self.principal(token) {
            Ok(p) => Some(p),
            Err(reason) => {
                tracing::debug!(%reason, "bearer token refused");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"a secret of at least thirty-two bytes";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn a_valid_token_names_its_principal() {
        let v = JwtVerifier::hs256(SECRET);
        let t = hs256(json!({"sub": "user-1", "exp": now() + 600}));
        assert_eq!(v.verify(&t).as_deref(), Some("user-1"));
    }

    #[test]
    fn expired_forged_or_claimless_tokens_are_refused() {
        let v = JwtVerifier::hs256(SECRET);
        let expired = hs256(json!({"sub": "user-1", "exp": now() - 3600}));
        assert!(v.principal(&expired).unwrap_err().contains("xpired"));
        let no_exp = hs256(json!({"sub": "user-1"}));
        assert!(v.verify(&no_exp).is_none(), "exp is required");
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "user-1", "exp": now() + 600}),
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!"),
        )
        .unwrap();
        assert!(v.verify(&forged).is_none());
        let no_sub = hs256(json!({"exp": now() + 600}));
        assert!(v.principal(&no_sub).unwrap_err().contains("`sub`"));
        let empty = hs256(json!({"sub": "", "exp": now() + 600}));
        assert!(v.verify(&empty).is_none());
        let number = hs256(json!({"sub": 7, "exp": now() + 600}));
        assert!(v.verify(&number).is_none());
        assert!(v.verify("not a token").is_none());
        assert!(v.verify("").is_none());
    }

    #[test]
    fn within_the_leeway_an_expired_token_still_counts() {
        let t = hs256(json!({"sub": "user-1", "exp": now() - 30}));
        assert!(JwtVerifier::hs256(SECRET).verify(&t).is_some());
        assert!(
            JwtVerifier::hs256(SECRET)
                .leeway_seconds(0)
                .verify(&t)
                .is_none()
        );
        let early = hs256(json!({"sub": "user-1", "exp": now() + 600, "nbf": now() + 300}));
        assert!(JwtVerifier::hs256(SECRET).verify(&early).is_none());
    }

    #[test]
    fn issuer_audience_and_claim_are_checked() {
        let v = JwtVerifier::hs256(SECRET)
            .issuer("https://id.example.com/")
            .audience("tasks-api")
            .principal_claim("uid");
        let good = hs256(json!({
            "uid": "u-9", "sub": "ignored", "exp": now() + 600,
            "iss": "https://id.example.com/", "aud": "tasks-api",
        }));
        assert_eq!(v.verify(&good).as_deref(), Some("u-9"));
        let other_aud = hs256(json!({
            "uid": "u-9", "exp": now() + 600,
            "iss": "https://id.example.com/", "aud": "billing",
        }));
        assert!(v.verify(&other_aud).is_none());
        let other_iss = hs256(json!({
            "uid": "u-9", "exp": now() + 600,
            "iss": "https://evil.example.com/", "aud": "tasks-api",
        }));
        assert!(v.verify(&other_iss).is_none());
        let no_aud_configured = JwtVerifier::hs256(SECRET);
        assert!(
            no_aud_configured.verify(&good).is_none(),
            "a token for an audience is refused where none is configured"
        );
    }

    #[test]
    fn another_algorithm_than_the_keys_is_refused() {
        let v = JwtVerifier::hs256(SECRET);
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "user-1", "exp": now() + 600}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(v.verify(&hs512).is_none());
        // An unsigned token (`alg: none`) never passes.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let body = base64_url(format!(r#"{{"sub":"user-1","exp":{}}}"#, now() + 600).as_bytes());
        assert!(v.verify(&format!("{header}.{body}.")).is_none());
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    // Test keys made for these tests with `openssl genpkey` (never used elsewhere).
    const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGKTrr98jTO/32IN/o3Z9erCj594ow8TRU+01fhHVZAt
-----END PRIVATE KEY-----";
    const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAFOtTVZGNYXL3Qzx4HCFPoVbxi+wIJWhdRrQ1FE/QyNo=
-----END PUBLIC KEY-----";
    const P256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgieqI2Xh2C7o+kLee
ri/JcOBcCsS2WTGlugwWO2HGxJKhRANCAASOgHj2PY/nG1u1oQ2Z6iz6kJvhEAyo
dWGvyZdOlv36zDgK+d5qwU/gGZubsUT+vOYnasHj17DPlIrQCDYAw7b4
-----END PRIVATE KEY-----";
    const P256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjoB49j2P5xtbtaENmeos+pCb4RAM
qHVhr8mXTpb9+sw4CvneasFP4Bmbm7FE/rzmJ2rB49ewz5SK0Ag2AMO2+A==
-----END PUBLIC KEY-----";

    #[test]
    fn public_keys_verify_tokens_signed_with_their_private_keys() {
        let claims = json!({"sub": "user-2", "exp": now() + 600});
        let ed = encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        let v = JwtVerifier::ed25519_pem(ED25519_PUBLIC.as_bytes()).unwrap();
        assert_eq!(v.verify(&ed).as_deref(), Some("user-2"));
        let es = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        let v = JwtVerifier::es256_pem(P256_PUBLIC.as_bytes()).unwrap();
        assert_eq!(v.verify(&es).as_deref(), Some("user-2"));
        assert!(v.verify(&ed).is_none(), "another key and algorithm");
        // An HS256 token "signed" with the public key's text (algorithm confusion).
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(P256_PUBLIC.as_bytes()),
        )
        .unwrap();
        assert!(v.verify(&confused).is_none());
    }

    #[test]
    fn a_key_that_is_not_pem_is_an_error() {
        let e = JwtVerifier::rs256_pem(b"not a key").unwrap_err();
        assert!(e.to_string().contains("RSA public key"), "{e}");
        assert!(JwtVerifier::es256_pem(b"").is_err());
        assert!(JwtVerifier::ed25519_pem(b"-----BEGIN PUBLIC KEY-----").is_err());
    }
}
