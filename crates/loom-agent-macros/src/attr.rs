//! The options inside `#[tool(...)]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitStr, Token};

/// Every accepted option, as the user writes it; used in the "unknown option" message.
const ACCEPTED: &[(&str, &str)] = &[
    ("name", "name = \"...\""),
    ("description", "description = \"...\""),
    ("read_only", "read_only"),
    ("destructive", "destructive"),
    ("concurrency_safe", "concurrency_safe"),
    ("requires_permission", "requires_permission"),
    ("idempotent", "idempotent"),
    ("rerun_on_resume", "rerun_on_resume"),
    ("timeout_secs", "timeout_secs = N"),
    ("blocking", "blocking"),
];

/// The parsed options of one `#[tool(...)]` attribute.
#[derive(Default)]
pub(crate) struct ToolAttr {
    /// `name = "..."`.
    pub(crate) name: Option<LitStr>,
    /// `description = "..."`.
    pub(crate) description: Option<LitStr>,
    pub(crate) read_only: bool,
    pub(crate) destructive: bool,
    pub(crate) concurrency_safe: bool,
    pub(crate) requires_permission: bool,
    pub(crate) idempotent: bool,
    pub(crate) rerun_on_resume: bool,
    /// `timeout_secs = N`: an expression of type `Duration`.
    pub(crate) timeout: Option<TokenStream>,
    /// `blocking`, with the span of the key for error messages.
    pub(crate) blocking: Option<Span>,
}

impl ToolAttr {
    /// Parses the tokens inside `#[tool(...)]`.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let mut attr = ToolAttr::default();
        let mut seen: Vec<String> = Vec::new();
        let parser = syn::meta::parser(|meta| {
            let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_else(|| path_string(&meta.path));
            if seen.contains(&key) {
                return Err(syn::Error::new_spanned(&meta.path, format!("duplicate `#[tool]` option `{key}`")));
            }
            match key.as_str() {
                "name" => attr.name = Some(string_value(&meta, "name", "get_weather")?),
                "description" => {
                    attr.description = Some(string_value(&meta, "description", "Get the weather for a city.")?);
                }
                "read_only" => attr.read_only = flag_value(&meta, &key)?,
                "destructive" => attr.destructive = flag_value(&meta, &key)?,
                "concurrency_safe" => attr.concurrency_safe = flag_value(&meta, &key)?,
                "requires_permission" => attr.requires_permission = flag_value(&meta, &key)?,
                "idempotent" => attr.idempotent = flag_value(&meta, &key)?,
                "rerun_on_resume" => attr.rerun_on_resume = flag_value(&meta, &key)?,
                "blocking" => {
                    if flag_value(&meta, &key)? {
                        attr.blocking = Some(meta.path.span());
                    }
                }
                "timeout_secs" => attr.timeout = Some(timeout_value(&meta)?),
                _ => return Err(unknown_option(&meta, &key)),
            }
            seen.push(key);
            Ok(())
        });
        parser.parse2(tokens)?;
        Ok(attr)
    }
}

fn path_string(path: &syn::Path) -> String {
    quote!(#path).to_string().replace(' ', "")
}

fn unknown_option(meta: &ParseNestedMeta<'_>, key: &str) -> syn::Error {
    let accepted: Vec<String> = ACCEPTED.iter().map(|(_, usage)| format!("`{usage}`")).collect();
    let suggestion = ACCEPTED
        .iter()
        .map(|(name, _)| (edit_distance(key, name), *name))
        .filter(|(distance, name)| *distance <= name.len().max(key.len()) / 3 + 1)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| format!(" (did you mean `{name}`?)"))
        .unwrap_or_default();
    syn::Error::new_spanned(
        &meta.path,
        format!("unknown `#[tool]` option `{key}`{suggestion}; the accepted options are: {}", accepted.join(", ")),
    )
}

/// `key = "string"`.
fn string_value(meta: &ParseNestedMeta<'_>, key: &str, example: &str) -> syn::Result<LitStr> {
    let message = format!("`{key}` takes a string literal, e.g. `{key} = \"{example}\"`");
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(&meta.path, message));
    }
    let expr: Expr = meta.value()?.parse()?;
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s),
        other => Err(syn::Error::new_spanned(other, message)),
    }
}

/// A flag: `key` alone, or `key = true` / `key = false`.
fn flag_value(meta: &ParseNestedMeta<'_>, key: &str) -> syn::Result<bool> {
    if meta.input.is_empty() || meta.input.peek(Token![,]) {
        return Ok(true);
    }
    let message = format!("`{key}` is a flag: write `{key}` alone (or `{key} = true` / `{key} = false`)");
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new(meta.input.span(), message));
    }
    let expr: Expr = meta.value()?.parse()?;
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Bool(b), .. }) => Ok(b.value),
        other => Err(syn::Error::new_spanned(other, message)),
    }
}

/// `timeout_secs = 30` or `timeout_secs = 2.5`, as a `Duration` expression.
fn timeout_value(meta: &ParseNestedMeta<'_>) -> syn::Result<TokenStream> {
    let message = "`timeout_secs` takes a positive number of seconds, e.g. `timeout_secs = 30` or `timeout_secs = 2.5`";
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(&meta.path, message));
    }
    let expr: Expr = meta.value()?.parse()?;
    match &expr {
        Expr::Lit(ExprLit { lit: Lit::Int(int), .. }) => {
            let secs: u64 = int.base10_parse()?;
            if secs == 0 {
                return Err(syn::Error::new_spanned(int, message));
            }
            Ok(quote!(::std::time::Duration::from_secs(#secs)))
        }
        Expr::Lit(ExprLit { lit: Lit::Float(float), .. }) => {
            let secs: f64 = float.base10_parse()?;
            // At most about a hundred years, which keeps `Duration::from_secs_f64` from panicking.
            if !(secs > 0.0 && secs < 3.2e9) {
                return Err(syn::Error::new_spanned(float, message));
            }
            Ok(quote!(::std::time::Duration::from_secs_f64(#secs)))
        }
        _ => Err(syn::Error::new_spanned(expr, message)),
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("readonly", "read_only"), 1);
        assert_eq!(edit_distance("timeout", "timeout_secs"), 5);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
