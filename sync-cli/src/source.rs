//! Reading Rust source: files, folders and the `mod x;` declarations they contain.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use syn::Item;
use sync_model::{Model, ParsedEntity, entities_in_file, is_cfg_test, validate_model};

use crate::error::{Diagnostic, Error};

/// A model read from source, with where each entity and field came from.
#[derive(Debug)]
pub struct Loaded {
    /// The model, entities in the order they were found.
    pub model: Model,
    /// Every file that was read (for `cargo:rerun-if-changed`).
    pub files: Vec<PathBuf>,
    /// Where each entity (field `None`) and each field is in the source, by wire names.
    places: std::collections::BTreeMap<(String, Option<String>), Diagnostic>,
}

impl Loaded {
    /// A diagnostic with `message` at an entity's struct name (`field` `None`) or at one
    /// of its fields, by wire names; `None` if the model has no such entity or field.
    pub fn diagnostic(
        &self,
        entity: &str,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Option<Diagnostic> {
        let mut d = self
            .places
            .get(&(entity.to_string(), field.map(str::to_string)))
            .or_else(|| self.places.get(&(entity.to_string(), None)))?
            .clone();
        d.message = message.into();
        Some(d)
    }
}

/// Reads the given files and folders and returns the model of every `Syncable` struct.
///
/// A folder contributes every `.rs` file below it (sorted; `target` and hidden folders
/// are skipped). A file also contributes the files of its `mod x;` declarations, found
/// the way rustc finds them (`x.rs` or `x/mod.rs`, or `#[path = "..."]`); modules under
/// `#[cfg(test)]` are skipped. Every error in every file is reported, nothing is partial.
///
/// # Errors
/// [`Error::MissingInput`] if an input is neither a file nor a folder; [`Error::Io`] at
/// the first file or folder that cannot be read (this stops the run);
/// [`Error::Input`] with every diagnostic found: Rust that does not parse, a bad
/// `#[sync(...)]` attribute, a `mod x;` whose file is missing, a `Syncable` struct
/// behind `#[cfg]`, and, when there is no other error, model-wide problems
/// ([`validate_model`]); [`Error::NoEntities`] if no `Syncable` struct was found
/// (also when `inputs` is empty).
pub fn load(inputs: &[PathBuf]) -> Result<Loaded, Error> {
    let mut queue: Vec<(PathBuf, bool)> = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            collect_dir(input, &mut found)?;
            found.sort();
            queue.extend(found.into_iter().map(|f| (f, false)));
        } else if input.is_file() {
            queue.push((input.clone(), false));
        } else {
            return Err(Error::MissingInput(input.clone()));
        }
    }

    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    let mut parsed: Vec<(PathBuf, ParsedEntity)> = Vec::new();
    let mut i = 0;
    while i < queue.len() {
        let (file, under_cfg) = queue[i].clone();
        i += 1;
        let canonical = file.canonicalize().map_err(|e| Error::io(&file, e))?;
        if !seen.insert(canonical) {
            continue;
        }
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        files.push(file.clone());
        let ast = match syn::parse_file(&text) {
            Ok(ast) => ast,
            Err(e) => {
                diagnostics.extend(Diagnostic::from_syn(&file, e).into_iter().map(|mut d| {
                    d.message = format!("cannot parse Rust source: {}", d.message);
                    d
                }));
                continue;
            }
        };
        match entities_in_file(&ast) {
            Ok(entities) => {
                if under_cfg && let Some(first) = entities.first() {
                    diagnostics.push(Diagnostic::at(
                        &file,
                        first.span,
                        "this file is a module behind #[cfg(...)]; syncgen generates one schema for every build, so move Syncable structs out of conditional modules",
                    ));
                }
                parsed.extend(entities.into_iter().map(|e| (file.clone(), e)));
            }
            Err(e) => diagnostics.extend(Diagnostic::from_syn(&file, e)),
        }
        for (child, cfg, span) in child_modules(&file, &ast.items) {
            if child.is_file() {
                queue.push((child, under_cfg || cfg));
            } else {
                diagnostics.push(Diagnostic::at(
                    &file,
                    span,
                    format!(
                        "cannot find the file of this module at `{}`; add it, or pass the folder with --input",
                        child.display()
                    ),
                ));
            }
        }
    }

    let model = Model {
        entities: parsed.iter().map(|(_, p)| p.entity.clone()).collect(),
    };
    if diagnostics.is_empty() {
        for issue in validate_model(&model) {
            let (file, p) = &parsed[issue.entity];
            let span = issue
                .field
                .and_then(|f| p.field_spans.get(f).copied())
                .unwrap_or(p.span);
            diagnostics.push(Diagnostic::at(file, span, issue.message));
        }
    }
    if !diagnostics.is_empty() {
        return Err(Error::Input(diagnostics));
    }
    if model.entities.is_empty() {
        let names: Vec<String> = inputs
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect();
        return Err(Error::NoEntities(names.join(", ")));
    }
    let mut places = std::collections::BTreeMap::new();
    for (file, p) in &parsed {
        let e = &p.entity;
        places.insert((e.name.clone(), None), Diagnostic::at(file, p.span, ""));
        for (f, span) in e.fields.iter().zip(&p.field_spans) {
            places.insert(
                (e.name.clone(), Some(f.name.clone())),
                Diagnostic::at(file, *span, ""),
            );
        }
    }
    Ok(Loaded {
        model,
        files,
        places,
    })
}

fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect_dir(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The files of `mod x;` declarations in `items` (recursing into inline modules), with
/// whether they sit behind a `#[cfg]`.
fn child_modules(file: &Path, items: &[Item]) -> Vec<(PathBuf, bool, proc_macro2::Span)> {
    let dir = module_dir(file);
    let file_dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut out = Vec::new();
    walk_mods(&dir, &file_dir, items, false, &mut out);
    out
}

fn module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("")).to_path_buf();
    match file.file_stem().and_then(|s| s.to_str()) {
        Some("mod" | "lib" | "main") | None => parent,
        Some(stem) => parent.join(stem),
    }
}

fn walk_mods(
    dir: &Path,
    file_dir: &Path,
    items: &[Item],
    cfg: bool,
    out: &mut Vec<(PathBuf, bool, proc_macro2::Span)>,
) {
    for item in items {
        let Item::Mod(m) = item else { continue };
        if is_cfg_test(&m.attrs) {
            continue;
        }
        let under_cfg = cfg || m.attrs.iter().any(|a| a.path().is_ident("cfg"));
        let explicit = m.attrs.iter().find_map(|a| {
            if !a.path().is_ident("path") {
                return None;
            }
            match &a.meta {
                syn::Meta::NameValue(nv) => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) => Some(s.value()),
                    _ => None,
                },
                _ => None,
            }
        });
        let name = m.ident.to_string();
        match &m.content {
            Some((_, inner)) => {
                walk_mods(&dir.join(&name), &dir.join(&name), inner, under_cfg, out)
            }
            None => {
                let path = match explicit {
                    // `#[path]` is relative to the declaring file's folder.
                    Some(p) => file_dir.join(p),
                    None => {
                        let flat = dir.join(format!("{name}.rs"));
                        if flat.is_file() {
                            flat
                        } else {
                            dir.join(&name).join("mod.rs")
                        }
                    }
                };
                out.push((path, under_cfg, m.ident.span()));
            }
        }
    }
}
