//! What the OpenAPI document says about the API that the model cannot: its title, the
//! servers it is deployed at, its licence and whom to contact.
//!
//! These are the app's, not syncgen's, so they are given once (flags of
//! `sync-cli generate`, or [`Builder::api`](crate::Builder::api) in a build script) and
//! kept in `sync-schema.json` under `api`. A later run without them keeps what is stored,
//! so the README's plain `generate` command still reports that nothing changed; a run with
//! one of them replaces that part only (the title, the whole server list, the whole
//! licence, or one member of the contact). To remove a stored value, delete it from
//! `sync-schema.json`'s `api` member and run `generate` again.
//!
//! Without a stored value the document has the title `syncgen sync API`, one server `/`
//! (OpenAPI's own default: the paths are relative to where the document is served) and no
//! licence or contact, which Redocly's and Spectral's recommended rules report as warnings:
//! they are the app's to set.

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::error::Error;

/// The title of a document with no stored title.
pub const DEFAULT_TITLE: &str = "syncgen sync API";

/// The API's descriptive metadata (OpenAPI's `info.title`, `servers`, `info.license`,
/// `info.contact`); every part is optional.
///
/// As stored in `sync-schema.json` and as given to [`Options::api`](crate::Options::api),
/// where a part that is `None` (or an empty `servers`) means "keep the stored one".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiInfo {
    /// `info.title`; [`DEFAULT_TITLE`] when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `servers`, in order; one server `/` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ApiServer>,
    /// `info.license`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<ApiLicense>,
    /// `info.contact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<ApiContact>,
}

/// One OpenAPI Server Object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiServer {
    /// An absolute `http`/`https` URL (`https://sync.example.com/v1`) or a path relative
    /// to where the document is served (`/sync`).
    pub url: String,
    /// What this server is (`production`, `staging`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// OpenAPI's License Object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiLicense {
    /// The licence's name, such as `MIT OR Apache-2.0`.
    pub name: String,
    /// Its SPDX expression (OpenAPI 3.1's `identifier`). The 3.0.3 rendering, which has no
    /// `identifier`, links `https://spdx.org/licenses/<identifier>.html` instead when the
    /// expression is a single identifier, and the SPDX list otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// A URL of the licence text; OpenAPI 3.1 allows either this or `identifier`, so
    /// this wins when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// OpenAPI's Contact Object; at least one part is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiContact {
    /// A person or team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An absolute `http`/`https` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl ApiInfo {
    /// Whether nothing is set (then `sync-schema.json` has no `api` member).
    pub fn is_empty(&self) -> bool {
        *self == ApiInfo::default()
    }

    /// `self` with every part `given` sets replaced by `given`'s: the title, the whole
    /// server list, the whole licence, and each member of the contact on its own.
    pub fn overlay(&self, given: &ApiInfo) -> ApiInfo {
        ApiInfo {
            title: given.title.clone().or_else(|| self.title.clone()),
            servers: if given.servers.is_empty() {
                self.servers.clone()
            } else {
                given.servers.clone()
            },
            license: given.license.clone().or_else(|| self.license.clone()),
            contact: match (&self.contact, &given.contact) {
                (Some(stored), Some(g)) => Some(ApiContact {
                    name: g.name.clone().or_else(|| stored.name.clone()),
                    url: g.url.clone().or_else(|| stored.url.clone()),
                    email: g.email.clone().or_else(|| stored.email.clone()),
                }),
                (stored, g) => g.clone().or_else(|| stored.clone()),
            },
        }
    }

    /// Checks every part: a non-blank title, server URLs that are absolute `http`/`https`
    /// URLs or paths starting with `/`, a licence with a name, a contact with at least one
    /// part, absolute `http`/`https` URLs and an email address of the form `local@domain`.
    ///
    /// # Errors
    /// [`Error::ApiInfo`] naming every part that is wrong and `origin` (where the values
    /// came from: the flags or `sync-schema.json`).
    pub fn validate(&self, origin: &str) -> Result<(), Error> {
        let mut problems = Vec::new();
        if let Some(title) = &self.title
            && title.trim().is_empty()
        {
            problems.push("the title is blank".to_string());
        }
        for s in &self.servers {
            let ok = if s.url.starts_with('/') {
                !s.url.chars().any(char::is_whitespace)
            } else {
                is_http_url(&s.url)
            };
            if !ok {
                problems.push(format!(
                    "server `{}` is neither an absolute http(s) URL (https://sync.example.com) nor a path starting with `/`",
                    s.url
                ));
            }
        }
        if let Some(l) = &self.license {
            if l.name.trim().is_empty() {
                problems.push("the licence has no name".to_string());
            }
            if let Some(url) = &l.url
                && !is_http_url(url)
            {
                problems.push(format!(
                    "licence URL `{url}` is not an absolute http(s) URL"
                ));
            }
            if let Some(id) = &l.identifier
                && (id.trim().is_empty() || id.chars().any(char::is_control))
            {
                problems.push(format!(
                    "licence identifier `{id}` is not an SPDX expression"
                ));
            }
        }
        if let Some(c) = &self.contact {
            if c == &ApiContact::default() {
                problems.push("the contact has neither a name, a URL nor an email".to_string());
            }
            if let Some(url) = &c.url
                && !is_http_url(url)
            {
                problems.push(format!(
                    "contact URL `{url}` is not an absolute http(s) URL"
                ));
            }
            if let Some(email) = &c.email
                && !is_email(email)
            {
                problems.push(format!(
                    "contact email `{email}` is not an address of the form name@domain"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::ApiInfo {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// Writes these values into an OpenAPI 3.1 document of [`crate::openapi::openapi`]
    /// (`info.title`, `servers`, `info.license`, `info.contact`), with the defaults for
    /// what is unset.
    pub fn apply_to(&self, doc: &mut Json) {
        doc["info"]["title"] = Json::from(self.title.as_deref().unwrap_or(DEFAULT_TITLE));
        doc["servers"] = if self.servers.is_empty() {
            json!([{ "url": "/", "description": "Relative to where this document is served." }])
        } else {
            serde_json::to_value(&self.servers).expect("servers serialise")
        };
        let info = doc["info"].as_object_mut().expect("info is an object");
        match &self.license {
            Some(l) => {
                let mut license = json!({ "name": l.name });
                match (&l.url, &l.identifier) {
                    (Some(url), _) => license["url"] = Json::from(url.as_str()),
                    (None, Some(id)) => license["identifier"] = Json::from(id.as_str()),
                    (None, None) => {}
                }
                info.insert("license".into(), license);
            }
            None => {
                info.remove("license");
            }
        }
        match &self.contact {
            Some(c) => {
                info.insert(
                    "contact".into(),
                    serde_json::to_value(c).expect("contact serialises"),
                );
            }
            None => {
                info.remove("contact");
            }
        }
    }
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// The license URL the 3.0.3 rendering uses for an SPDX `identifier` (3.0 has no
/// `identifier`): the identifier's page for a single identifier, the list otherwise.
pub(crate) fn spdx_url(identifier: &str) -> String {
    let single = identifier
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    if single {
        format!("https://spdx.org/licenses/{identifier}.html")
    } else {
        "https://spdx.org/licenses/".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ApiInfo {
        ApiInfo {
            title: Some("Tasks sync API".into()),
            servers: vec![ApiServer {
                url: "https://sync.example.com".into(),
                description: None,
            }],
            license: Some(ApiLicense {
                name: "MIT".into(),
                identifier: Some("MIT".into()),
                url: None,
            }),
            contact: Some(ApiContact {
                name: Some("Tasks team".into()),
                url: None,
                email: Some("sync@example.com".into()),
            }),
        }
    }

    #[test]
    fn overlay_replaces_only_what_is_given() {
        let stored = full();
        let given = ApiInfo {
            servers: vec![ApiServer {
                url: "/v2".into(),
                description: None,
            }],
            ..ApiInfo::default()
        };
        let merged = stored.overlay(&given);
        assert_eq!(merged.servers, given.servers);
        // The contact member by member: a new URL keeps the stored name and email.
        let url_only = ApiInfo {
            contact: Some(ApiContact {
                url: Some("https://example.com/team".into()),
                ..ApiContact::default()
            }),
            ..ApiInfo::default()
        };
        let c = stored.overlay(&url_only).contact.unwrap();
        assert_eq!(c.name.as_deref(), Some("Tasks team"));
        assert_eq!(c.email.as_deref(), Some("sync@example.com"));
        assert_eq!(c.url.as_deref(), Some("https://example.com/team"));
        assert_eq!(merged.title, stored.title);
        assert_eq!(merged.license, stored.license);
        assert_eq!(merged.contact, stored.contact);
        assert_eq!(stored.overlay(&ApiInfo::default()), stored);
    }

    #[test]
    fn validation_names_every_bad_part_and_the_origin() {
        assert!(full().validate("flags").is_ok());
        let bad = ApiInfo {
            title: Some("  ".into()),
            servers: vec![
                ApiServer {
                    url: "sync.example.com".into(),
                    description: None,
                },
                ApiServer {
                    url: "ftp://x.example.com".into(),
                    description: None,
                },
            ],
            license: Some(ApiLicense {
                name: "".into(),
                identifier: None,
                url: Some("not a url".into()),
            }),
            contact: Some(ApiContact {
                email: Some("nobody".into()),
                ..ApiContact::default()
            }),
        };
        let err = bad.validate("the flags").unwrap_err();
        let text = err.to_string();
        for part in [
            "the flags",
            "title is blank",
            "`sync.example.com`",
            "`ftp://x.example.com`",
            "licence has no name",
            "`not a url`",
            "`nobody`",
        ] {
            assert!(text.contains(part), "{part} missing from: {text}");
        }
        assert_eq!(err.exit_code(), 2);
        let empty_contact = ApiInfo {
            contact: Some(ApiContact::default()),
            ..ApiInfo::default()
        };
        assert!(empty_contact.validate("x").is_err());
    }

    #[test]
    fn defaults_and_values_land_in_the_document() {
        let mut doc = json!({ "info": { "title": "t", "version": "v" } });
        ApiInfo::default().apply_to(&mut doc);
        assert_eq!(doc["info"]["title"], DEFAULT_TITLE);
        assert_eq!(doc["servers"][0]["url"], "/");
        assert!(doc["info"].get("license").is_none());
        full().apply_to(&mut doc);
        assert_eq!(doc["info"]["title"], "Tasks sync API");
        assert_eq!(
            doc["servers"],
            json!([{ "url": "https://sync.example.com" }])
        );
        assert_eq!(
            doc["info"]["license"],
            json!({ "name": "MIT", "identifier": "MIT" })
        );
        assert_eq!(
            doc["info"]["contact"],
            json!({ "name": "Tasks team", "email": "sync@example.com" })
        );
    }

    #[test]
    fn spdx_urls() {
        assert_eq!(spdx_url("MIT"), "https://spdx.org/licenses/MIT.html");
        assert_eq!(
            spdx_url("Apache-2.0"),
            "https://spdx.org/licenses/Apache-2.0.html"
        );
        assert_eq!(spdx_url("MIT OR Apache-2.0"), "https://spdx.org/licenses/");
    }
}
