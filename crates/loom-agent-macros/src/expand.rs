//! The expansion of `#[tool]`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, Item, ItemFn, Pat, PatType, ReturnType, Signature, Type};

use crate::attr::ToolAttr;
use crate::docs;

/// Expands `#[tool(attr)] item`. Errors become `compile_error!`s next to the item, so the rest of
/// the crate still sees the function and does not drown the real error in follow-up ones.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(item) => item,
        Err(err) => {
            let err = err.to_compile_error();
            return quote!(#err #item);
        }
    };
    let func = match item {
        Item::Fn(func) => func,
        other => {
            let err = syn::Error::new_spanned(
                item_head(&other),
                format!(
                    "`#[tool]` can only be applied to a function (`fn` or `async fn`), not to {}",
                    item_kind(&other)
                ),
            )
            .to_compile_error();
            return quote!(#err #other);
        }
    };
    let attr = ToolAttr::parse(attr);
    match Tool::analyze(attr, &func) {
        Ok(tool) => tool.generate(),
        Err(err) => {
            let err = err.to_compile_error();
            let func = strip_param_attrs(func);
            quote!(#err #func)
        }
    }
}

/// Collects errors so that one compilation reports all of them.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(err),
            None => self.0 = Some(err),
        }
    }

    fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// One parameter of the tool function.
enum Param {
    /// The call's `ToolContext`.
    Context,
    /// A JSON argument, a field of the arguments struct.
    Arg(Box<Arg>),
}

struct Arg {
    /// The Rust name of the field (the parameter's name without `mut`).
    ident: Ident,
    /// The name the model sees.
    json_name: String,
    ty: Type,
    /// Doc comments, `#[serde(...)]` and `#[schemars(...)]` attributes, moved to the field.
    field_attrs: Vec<Attribute>,
    /// Which serde options the user set on the parameter.
    user_serde: SerdeKeys,
}

#[derive(Default)]
struct SerdeKeys {
    default: bool,
    with: bool,
    skip_serializing_if: bool,
}

/// Everything the expansion needs, checked.
struct Tool {
    attr: ToolAttr,
    func: ItemFn,
    name: String,
    description: String,
    params: Vec<Param>,
}

impl Tool {
    fn analyze(attr: syn::Result<ToolAttr>, func: &ItemFn) -> syn::Result<Tool> {
        let mut errors = Errors::default();
        let attr_parsed = attr.is_ok();
        let attr = attr.unwrap_or_else(|err| {
            errors.push(err);
            ToolAttr::default()
        });
        let sig = &func.sig;
        check_signature(sig, &attr, &mut errors);

        let mut params = Vec::new();
        let mut context: Option<&PatType> = None;
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(receiver) => errors.spanned(
                    receiver,
                    "`#[tool]` cannot be used on a method: a tool is a free function, and `self` is not something the \
                     model can send. Move the function out of the `impl` block; for shared state, make a struct and \
                     implement `loom_agent::Tool` for it",
                ),
                FnArg::Typed(pat_type) => {
                    if let Some(param) = analyze_param(pat_type, &mut context, &mut errors) {
                        params.push(param);
                    }
                }
            }
        }

        let name = match &attr.name {
            Some(lit) => {
                let name = lit.value();
                if !valid_tool_name(&name) {
                    errors.spanned(
                        lit,
                        format!("invalid tool name `{name}`: use 1 to 64 ASCII letters, digits, `_` or `-`"),
                    );
                }
                name
            }
            None => {
                let name = sig.ident.unraw().to_string();
                if !valid_tool_name(&name) {
                    errors.spanned(
                        &sig.ident,
                        format!(
                            "`{name}` is not a valid tool name (1 to 64 ASCII letters, digits, `_` or `-`); \
                             set one with `#[tool(name = \"...\")]`"
                        ),
                    );
                }
                name
            }
        };

        let description = match &attr.description {
            Some(lit) => {
                let text = lit.value().trim().to_string();
                if text.is_empty() {
                    errors.spanned(lit, "the tool description is empty; say what the tool does, for the model");
                }
                text
            }
            None => docs::description(&docs::doc_lines(&func.attrs)).unwrap_or_else(|| {
                // After an attribute error, a `description = ".."` may be among the unread options.
                if !attr_parsed {
                    return String::new();
                }
                errors.spanned(
                    &sig.ident,
                    format!(
                        "tool `{name}` has no description: the model needs one to know when to call it. \
                         Add a doc comment (`/// What the tool does.`) to the function, or write \
                         `#[tool(description = \"...\")]`"
                    ),
                );
                String::new()
            }),
        };

        errors.finish()?;
        Ok(Tool { attr, func: func.clone(), name, description, params })
    }

    fn generate(self) -> TokenStream {
        let Tool { attr, func, name, description, params } = self;
        let vis = &func.vis;
        let ident = &func.sig.ident;
        let is_async = func.sig.asyncness.is_some();
        let span = ident.span();

        // The unit struct, documented with the function's docs.
        let doc_attrs: Vec<&Attribute> = func.attrs.iter().filter(|a| docs::is_doc(a)).collect();
        let struct_docs = if doc_attrs.is_empty() {
            let doc = format!("The `{name}` tool: {description}");
            quote!(#[doc = #doc])
        } else {
            quote!(#(#doc_attrs)*)
        };
        let other_attrs: Vec<&Attribute> = func.attrs.iter().filter(|a| !docs::is_doc(a)).collect();

        // `invoke`: the original function, under a new name.
        let mut invoke_sig = strip_sig_param_attrs(func.sig.clone());
        invoke_sig.ident = Ident::new("invoke", span);
        let block = &func.block;
        let invoke_doc = format!("Calls the function behind the `{name}` tool directly.");

        // The arguments struct and one deserializer per field, which names the field in errors.
        let args_struct = Ident::new("__LoomToolArgs", Span::mixed_site());
        let mut fields = Vec::new();
        let mut deserializers = Vec::new();
        let mut call_args = Vec::new();
        for (index, param) in params.iter().enumerate() {
            match param {
                Param::Context => call_args.push(quote!(__loom_ctx)),
                Param::Arg(arg) => {
                    let Arg { ident: field, json_name, ty, field_attrs, user_serde } = &**arg;
                    let mut serde_options = Vec::new();
                    if !user_serde.with {
                        let de_fn = format_ident!("__loom_tool_de_{}", index);
                        let de_fn_path = de_fn.to_string();
                        serde_options.push(quote!(deserialize_with = #de_fn_path));
                        let ty_span = ty.span();
                        deserializers.push(quote_spanned! {ty_span=>
                            fn #de_fn<'de, __D>(deserializer: __D) -> ::core::result::Result<#ty, __D::Error>
                            where
                                __D: ::loom_agent::__private::serde::Deserializer<'de>,
                            {
                                <#ty as ::loom_agent::__private::serde::Deserialize<'de>>::deserialize(deserializer).map_err(|err| {
                                    <__D::Error as ::loom_agent::__private::serde::de::Error>::custom(
                                        ::core::format_args!("field `{}`: {}", #json_name, err),
                                    )
                                })
                            }
                        });
                    }
                    if is_option(ty) && !user_serde.default {
                        serde_options.push(quote!(default));
                        // Keeps schemars from writing `"default": null` into the schema; has no
                        // effect on deserializing.
                        if !user_serde.skip_serializing_if {
                            serde_options.push(quote!(skip_serializing_if = "::std::option::Option::is_none"));
                        }
                    }
                    let serde_attr = if serde_options.is_empty() {
                        TokenStream::new()
                    } else {
                        quote!(#[serde(#(#serde_options),*)])
                    };
                    fields.push(quote! {
                        #(#field_attrs)*
                        #serde_attr
                        #field: #ty,
                    });
                    call_args.push(quote!(__loom_args.#field));
                }
            }
        }

        let invocation = if is_async {
            quote!(#ident::invoke(#(#call_args),*).await)
        } else if attr.blocking.is_some() {
            quote! {
                match ::loom_agent::__private::tokio::task::spawn_blocking(move || #ident::invoke(#(#call_args),*)).await {
                    ::core::result::Result::Ok(ret) => ret,
                    ::core::result::Result::Err(err) => return ::core::result::Result::Err(__loom_join_error(#name, err)),
                }
            }
        } else {
            quote!(#ident::invoke(#(#call_args),*))
        };
        let join_error_fn = attr.blocking.map(|_| {
            quote! {
                fn __loom_join_error(tool: &str, err: ::loom_agent::__private::tokio::task::JoinError) -> ::loom_agent::tool::ToolError {
                    use ::loom_agent::tool::{ToolError, ToolErrorKind};
                    if err.is_panic() {
                        let payload = err.into_panic();
                        let message = payload
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_string())
                            .or_else(|| payload.downcast_ref::<::std::string::String>().cloned())
                            .unwrap_or_else(|| "a non-string panic payload".to_string());
                        ToolError::with_kind(ToolErrorKind::Panicked, ::std::format!("tool `{tool}` panicked: {message}"))
                    } else {
                        ToolError::with_kind(ToolErrorKind::Cancelled, ::std::format!("tool `{tool}` was cancelled before it finished"))
                    }
                }
            }
        });

        // Spanned at the return type, so "`X` is not a tool result" points there.
        let ret_span = match &func.sig.output {
            ReturnType::Type(_, ty) => ty.span(),
            ReturnType::Default => ident.span(),
        };
        let into_result = quote_spanned! {ret_span=>
            ::loom_agent::tool::IntoToolResult::into_tool_result(__loom_ret)
        };

        let flag = |on: bool, method: &str| {
            let method = Ident::new(method, Span::call_site());
            if on { quote!(.#method()) } else { TokenStream::new() }
        };
        let flags = [
            flag(attr.read_only, "read_only"),
            flag(attr.destructive, "destructive"),
            flag(attr.concurrency_safe, "concurrency_safe"),
            flag(attr.requires_permission, "requires_permission"),
            flag(attr.idempotent, "idempotent"),
            flag(attr.rerun_on_resume, "rerun_on_resume"),
        ];
        let timeout = match &attr.timeout {
            Some(duration) => quote!(::core::option::Option::Some(#duration)),
            None => quote!(::core::option::Option::None),
        };

        quote! {
            #struct_docs
            #[allow(non_camel_case_types)]
            #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default)]
            #vis struct #ident;

            impl #ident {
                #[doc = #invoke_doc]
                // A tool's parameters are its JSON arguments; many of them is normal.
                #[allow(clippy::too_many_arguments)]
                #(#other_attrs)*
                #vis #invoke_sig #block
            }

            const _: () = {
                #[derive(::loom_agent::__private::serde::Deserialize, ::loom_agent::__private::schemars::JsonSchema)]
                #[serde(crate = "::loom_agent::__private::serde", deny_unknown_fields)]
                #[schemars(crate = "::loom_agent::__private::schemars")]
                struct #args_struct {
                    #(#fields)*
                }

                #(#deserializers)*

                /// The arguments as a JSON object; `null` (which a model may send for a tool without
                /// parameters) counts as `{}`.
                fn __loom_object(
                    tool: &str,
                    arguments: ::loom_agent::__private::serde_json::Value,
                ) -> ::core::result::Result<::loom_agent::__private::serde_json::Value, ::loom_agent::tool::ToolError> {
                    use ::loom_agent::__private::serde_json::{Map, Value};
                    let got = match arguments {
                        Value::Object(_) => return ::core::result::Result::Ok(arguments),
                        Value::Null => return ::core::result::Result::Ok(Value::Object(Map::new())),
                        Value::Array(_) => "an array",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        Value::Bool(_) => "a boolean",
                    };
                    ::core::result::Result::Err(::loom_agent::tool::ToolError::invalid_arguments(::std::format!(
                        "invalid arguments for `{tool}`: expected a JSON object, got {got}"
                    )))
                }

                #join_error_fn

                #[::loom_agent::__private::async_trait::async_trait]
                impl ::loom_agent::tool::Tool for #ident {
                    fn name(&self) -> &str {
                        #name
                    }

                    fn description(&self) -> &str {
                        #description
                    }

                    fn parameters(&self) -> ::loom_agent::__private::serde_json::Value {
                        use ::loom_agent::__private::serde_json::{Map, Value};
                        static SCHEMA: ::std::sync::OnceLock<Value> = ::std::sync::OnceLock::new();
                        SCHEMA
                            .get_or_init(|| {
                                let mut schema: Value = ::loom_agent::__private::schemars::schema_for!(#args_struct).into();
                                if let Value::Object(root) = &mut schema {
                                    root.remove("$schema");
                                    root.remove("title");
                                    root.entry("properties").or_insert_with(|| Value::Object(Map::new()));
                                    root.entry("required").or_insert_with(|| Value::Array(::std::vec::Vec::new()));
                                }
                                schema
                            })
                            .clone()
                    }

                    fn flags(&self) -> ::loom_agent::tool::ToolFlags {
                        ::loom_agent::tool::ToolFlags::new() #(#flags)*
                    }

                    fn timeout(&self) -> ::core::option::Option<::std::time::Duration> {
                        #timeout
                    }

                    async fn call(
                        &self,
                        __loom_ctx: ::loom_agent::tool::ToolContext,
                        __loom_arguments: ::loom_agent::__private::serde_json::Value,
                    ) -> ::core::result::Result<::loom_agent::tool::ToolOutput, ::loom_agent::tool::ToolError> {
                        let __loom_arguments = __loom_object(#name, __loom_arguments)?;
                        let __loom_args: #args_struct = ::loom_agent::tool::parse_arguments(#name, __loom_arguments)?;
                        let __loom_ret = #invocation;
                        #into_result
                    }
                }
            };
        }
    }
}

/// Checks everything about the signature except the parameters.
fn check_signature(sig: &Signature, attr: &ToolAttr, errors: &mut Errors) {
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "`#[tool]` functions cannot be generic: the model's JSON arguments are deserialized into concrete \
             types, and the schema is computed from them. Use concrete types (an enum for several variants)",
        );
    } else if let Some(where_clause) = &sig.generics.where_clause {
        errors.spanned(where_clause, "`#[tool]` functions cannot have a `where` clause");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(
            unsafety,
            "`#[tool]` functions cannot be `unsafe`: the runtime calls them with whatever the model sends",
        );
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "`#[tool]` functions cannot have an `extern` ABI");
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "`#[tool]` functions cannot be variadic");
    }
    if let (Some(blocking), Some(_)) = (attr.blocking, &sig.asyncness) {
        errors.push(syn::Error::new(
            blocking,
            "`blocking` is for plain `fn`s that block (file or network I/O, heavy computation): it runs them on \
             tokio's blocking thread pool. This function is an `async fn`, which already runs on the runtime: \
             remove `blocking`, or make it a plain `fn`",
        ));
    }
}

fn analyze_param<'a>(pat_type: &'a PatType, context: &mut Option<&'a PatType>, errors: &mut Errors) -> Option<Param> {
    let ty = &*pat_type.ty;
    if is_context_type(ty) {
        if let Some(first) = context {
            let first = match &*first.pat {
                Pat::Ident(pat) => format!("`{}`", pat.ident),
                _ => "the first one".to_string(),
            };
            errors.spanned(
                pat_type,
                format!(
                    "a `#[tool]` function takes at most one `ToolContext` parameter, and it already has {first}; \
                     remove this one (a `ToolContext` is cheap to clone)"
                ),
            );
            return None;
        }
        *context = Some(pat_type);
        match &*pat_type.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {}
            Pat::Wild(_) => {}
            other => errors.spanned(other, "bind the `ToolContext` to a plain name, such as `ctx: ToolContext`"),
        }
        return Some(Param::Context);
    }
    if let Type::Reference(reference) = ty
        && is_context_type(&reference.elem)
    {
        errors.spanned(
            reference,
            "take the `ToolContext` by value (`ctx: ToolContext`): it is cheap to clone, and the call owns it",
        );
        return None;
    }

    let ident = match &*pat_type.pat {
        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
        other => {
            errors.spanned(
                other,
                "`#[tool]` parameters must be plain names, such as `city: String`: each name becomes the name of a \
                 JSON argument. Take the value under one name and destructure it in the body",
            );
            return None;
        }
    };

    let mut ok = true;
    if let Some(impl_trait) = find_impl_trait(ty) {
        errors.spanned(
            impl_trait,
            "`impl Trait` parameters are not supported by `#[tool]`: the model's JSON arguments are deserialized \
             into a concrete type. Use a concrete type such as `String`, `Vec<T>` or a type of your own",
        );
        ok = false;
    } else if let Type::Reference(reference) = ty {
        let owned = match &*reference.elem {
            Type::Path(p) if p.path.is_ident("str") => "`String`".to_string(),
            Type::Slice(slice) => format!("`Vec<{}>`", slice.elem.to_token_stream()),
            other => format!("`{}`", other.to_token_stream()),
        };
        errors.spanned(
            reference,
            format!(
                "`#[tool]` parameters must be owned types, because they are deserialized from the model's JSON \
                 arguments: use {owned} instead"
            ),
        );
        ok = false;
    }

    let mut field_attrs = Vec::new();
    let mut user_serde = SerdeKeys::default();
    let mut json_name = ident.unraw().to_string();
    for attr in &pat_type.attrs {
        if docs::is_doc(attr) || attr.path().is_ident("schemars") {
            field_attrs.push(attr.clone());
        } else if attr.path().is_ident("serde") {
            read_serde_keys(attr, &mut user_serde, &mut json_name);
            field_attrs.push(attr.clone());
        }
    }
    ok.then(|| Param::Arg(Box::new(Arg { ident, json_name, ty: ty.clone(), field_attrs, user_serde })))
}

/// Notes the serde options the user set on a parameter that the expansion must not set again.
/// Anything unreadable is left for serde to report.
fn read_serde_keys(attr: &Attribute, keys: &mut SerdeKeys, json_name: &mut String) {
    let _ = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("default") {
            keys.default = true;
        } else if meta.path.is_ident("with") || meta.path.is_ident("deserialize_with") {
            keys.with = true;
        } else if meta.path.is_ident("skip_serializing_if") {
            keys.skip_serializing_if = true;
        } else if meta.path.is_ident("rename") && meta.input.peek(syn::Token![=]) {
            let name: syn::LitStr = meta.value()?.parse()?;
            *json_name = name.value();
            return Ok(());
        }
        // Skip the option's value, whatever it is.
        if meta.input.peek(syn::Token![=]) {
            let _: syn::Expr = meta.value()?.parse()?;
        } else if meta.input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in meta.input);
            let _: TokenStream = content.parse()?;
        }
        Ok(())
    });
}

/// `ToolContext`, or any path ending in it (`loom_agent::ToolContext`, `tool::ToolContext`).
fn is_context_type(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => {
            p.qself.is_none()
                && p.path.segments.last().is_some_and(|last| last.ident == "ToolContext" && last.arguments.is_none())
        }
        Type::Group(g) => is_context_type(&g.elem),
        Type::Paren(p) => is_context_type(&p.elem),
        _ => false,
    }
}

/// `Option<T>` by its last path segment (`Option`, `std::option::Option`, `core::option::Option`).
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => {
            p.qself.is_none()
                && p.path.segments.last().is_some_and(|last| {
                    last.ident == "Option"
                        && matches!(&last.arguments, syn::PathArguments::AngleBracketed(args) if args.args.len() == 1)
                })
        }
        Type::Group(g) => is_option(&g.elem),
        Type::Paren(p) => is_option(&p.elem),
        _ => false,
    }
}

/// The first `impl Trait` anywhere inside a type.
fn find_impl_trait(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(_) => Some(ty),
        Type::Array(a) => find_impl_trait(&a.elem),
        Type::Group(g) => find_impl_trait(&g.elem),
        Type::Paren(p) => find_impl_trait(&p.elem),
        Type::Ptr(p) => find_impl_trait(&p.elem),
        Type::Reference(r) => find_impl_trait(&r.elem),
        Type::Slice(s) => find_impl_trait(&s.elem),
        Type::Tuple(t) => t.elems.iter().find_map(find_impl_trait),
        Type::Path(p) => p.path.segments.iter().find_map(|segment| match &segment.arguments {
            syn::PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
                syn::GenericArgument::Type(ty) => find_impl_trait(ty),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }
}

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The parameter attributes the expansion moves to the arguments struct; rustc rejects doc
/// comments on parameters, and `serde`/`schemars` are not attributes there.
fn is_field_attr(attr: &Attribute) -> bool {
    docs::is_doc(attr) || attr.path().is_ident("serde") || attr.path().is_ident("schemars")
}

fn strip_sig_param_attrs(mut sig: Signature) -> Signature {
    for input in &mut sig.inputs {
        if let FnArg::Typed(pat_type) = input {
            pat_type.attrs.retain(|a| !is_field_attr(a));
        }
    }
    sig
}

fn strip_param_attrs(mut func: ItemFn) -> ItemFn {
    func.sig = strip_sig_param_attrs(func.sig);
    func
}

/// The start of an item, for pointing at it in an error: `struct Foo`, `impl`, `mod foo`, ...
fn item_head(item: &Item) -> TokenStream {
    match item {
        Item::Struct(i) => head(&i.struct_token, &i.ident),
        Item::Enum(i) => head(&i.enum_token, &i.ident),
        Item::Union(i) => head(&i.union_token, &i.ident),
        Item::Trait(i) => head(&i.trait_token, &i.ident),
        Item::Mod(i) => head(&i.mod_token, &i.ident),
        Item::Const(i) => head(&i.const_token, &i.ident),
        Item::Static(i) => head(&i.static_token, &i.ident),
        Item::Type(i) => head(&i.type_token, &i.ident),
        Item::Impl(i) => i.impl_token.to_token_stream(),
        Item::Use(i) => i.use_token.to_token_stream(),
        other => other.to_token_stream().into_iter().next().into_iter().collect(),
    }
}

fn head(keyword: &impl ToTokens, ident: &Ident) -> TokenStream {
    quote!(#keyword #ident)
}

fn item_kind(item: &Item) -> &'static str {
    match item {
        Item::Const(_) => "a `const`",
        Item::Enum(_) => "an enum",
        Item::ExternCrate(_) => "an `extern crate`",
        Item::ForeignMod(_) => "an `extern` block",
        Item::Impl(_) => "an `impl` block",
        Item::Macro(_) => "a macro invocation",
        Item::Mod(_) => "a module",
        Item::Static(_) => "a `static`",
        Item::Struct(_) => "a struct",
        Item::Trait(_) => "a trait",
        Item::TraitAlias(_) => "a trait alias",
        Item::Type(_) => "a type alias",
        Item::Union(_) => "a union",
        Item::Use(_) => "a `use` declaration",
        _ => "this item",
    }
}
