//! The module loader of guest modules: the only imports a guest module may
//! make are a few synthetic modules named like the Endo and MetaMask
//! packages vat code imports (`@endo/eventual-send`, `@endo/far`,
//! `@endo/patterns`, `@endo/exo`, `@metamask/kernel-utils/exo`). Each
//! exports the compartment's own guest globals of those names, so real
//! vat programs run unchanged. Any other specifier fails with a
//! `TypeError` naming it.
//!
//! QuickJS keeps loaded modules per context, and every compartment is a
//! fresh context, so a synthetic module is evaluated in each compartment
//! that imports it, before any code of the importing module runs.

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Ctx, Exception, Module};

/// Each synthetic module's specifier and the guest globals it exports.
const SYNTHETIC_MODULES: &[(&str, &[&str])] = &[
    ("@endo/eventual-send", &["E"]),
    ("@endo/far", &["E", "Far", "passStyleOf"]),
    (
        "@endo/patterns",
        &["M", "matches", "mustMatch", "makeCopySet", "makeCopyBag", "makeCopyMap"],
    ),
    ("@endo/exo", &["makeExo", "defineExoClass", "defineExoClassKit"]),
    ("@metamask/kernel-utils/exo", &["makeDefaultExo"]),
];

fn exports_of(specifier: &str) -> Option<&'static [&'static str]> {
    SYNTHETIC_MODULES
        .iter()
        .find(|(name, _)| *name == specifier)
        .map(|(_, exports)| *exports)
}

/// The source of a synthetic module: its exports, read from the
/// compartment's globals (nothing else has run in it yet).
fn synthetic_source(exports: &[&str]) -> String {
    let mut source = String::from("const g = globalThis;\n");
    for name in exports {
        source.push_str(&format!("export const {name} = g.{name};\n"));
    }
    source
}

/// Resolves and loads the synthetic modules; refuses everything else.
pub(crate) struct SyntheticModules;

impl Resolver for SyntheticModules {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        _base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        if exports_of(name).is_some() {
            return Ok(name.to_string());
        }
        let known: Vec<&str> = SYNTHETIC_MODULES.iter().map(|(name, _)| *name).collect();
        Err(Exception::throw_type(
            ctx,
            &format!(
                "Cannot import {name:?}: a guest module may import only {}",
                known.join(", ")
            ),
        ))
    }
}

impl Loader for SyntheticModules {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let Some(exports) = exports_of(name) else {
            return Err(Exception::throw_type(ctx, &format!("Cannot import {name:?}")));
        };
        Module::declare(ctx.clone(), name, synthetic_source(exports))
    }
}
