//! Prints Strand's CRDs, generated from the Rust types in `operator/src/crd`.
//!
//! Regenerate `crds/` and the Helm chart's copies (one file per CRD) from the repository root
//! with:
//!
//!     cargo run -p operator --bin crdgen -- crds/ charts/strand/crds/
//!
//! Without an argument it prints every CRD to stdout as one multi-document YAML stream, e.g.
//! `cargo run -q -p operator --bin crdgen | kubectl apply -f -`.
//! `operator/tests/crds_up_to_date.rs` fails when either directory differs from what this writes.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let files = operator::crd::crd_files()?;
    let dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        let docs: Vec<&str> = files.iter().map(|f| f.yaml.as_str()).collect();
        print!("{}", docs.join("---\n"));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for f in &files {
            let path = dir.join(&f.file_name);
            std::fs::write(&path, &f.yaml)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
