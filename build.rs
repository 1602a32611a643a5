//! Regenerates include/synchdb_core.h, the C side's view of src/ffi.rs.
fn main() {
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = match cbindgen::Config::from_file("cbindgen.toml") {
        Ok(c) => c,
        Err(e) => panic!("cbindgen.toml: {e}"),
    };
    match cbindgen::Builder::new()
        .with_config(config)
        .with_src("src/ffi.rs")
        .generate()
    {
        Ok(b) => {
            b.write_to_file("include/synchdb_core.h");
        }
        Err(e) => panic!("cbindgen could not generate include/synchdb_core.h: {e}"),
    }
}
