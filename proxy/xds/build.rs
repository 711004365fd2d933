//! Compiles the Envoy v3 `.proto` files that the `envoy-types` crate ships (its `proto/`
//! directory, found through cargo metadata: nothing is vendored) with protox, the pure-Rust
//! protobuf compiler, into one descriptor set in OUT_DIR. `src/pool.rs` loads it into a
//! prost-reflect `DescriptorPool` so a pushed `Any` can be decoded by name and printed as JSON.

use std::{env, fs, path::PathBuf};

fn main() {
    let meta = cargo_metadata::MetadataCommand::new()
        .other_options(vec![
            "--offline".to_string(),
            "--filter-platform".to_string(),
            env::var("TARGET").expect("TARGET"),
        ])
        .exec()
        .expect("cargo metadata --offline (run `cargo fetch` first: it needs every crate in Cargo.lock)");
    let envoy = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "envoy-types")
        .expect("envoy-types in the dependency graph");
    let proto = envoy
        .manifest_path
        .parent()
        .expect("envoy-types directory")
        .join("proto")
        .into_std_path_buf();
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec/proto",
        "client_model",
        "opentelemetry-proto",
    ]
    .iter()
    .map(|d| proto.join(d))
    .collect();
    // Every Envoy API file plus the udpa/xds ones (TypedStruct, matchers): any typed_config
    // Envoy knows decodes, and the engine then says precisely what it does not support.
    let mut files = Vec::new();
    for root in ["data-plane-api/envoy", "xds/udpa", "xds/xds"] {
        collect(&proto.join(root), &mut files);
    }
    // Opened last: they define `envoy.extensions.config`, which would shadow the relative
    // names (`config.core.v3.X`) other extension files use.
    files.sort_by_key(|f| {
        (
            f.to_string_lossy().contains("envoy/extensions/config/"),
            f.clone(),
        )
    });
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            includes
                .iter()
                .find_map(|i| f.strip_prefix(i).ok())
                .expect("file under an include dir")
                .to_path_buf()
        })
        .collect();
    // One compiler for all files; a file whose relative names (`common.x.v3.Y`) another
    // loaded package shadows under protoc's scope rules is compiled again on its own, as
    // protoc would (it only sees a file's imports), and its descriptors are merged in.
    let mut compiler = protox::Compiler::new(&includes).expect("include dirs");
    compiler.include_imports(true);
    let mut retry = Vec::new();
    for f in &relative {
        if compiler.open_file(f).is_err() {
            retry.push(f);
        }
    }
    let mut set = compiler.file_descriptor_set();
    for f in retry {
        let mut alone = protox::Compiler::new(&includes).expect("include dirs");
        alone.include_imports(true);
        // Only clusters/dynamic_forward_proxy stays out (a name its own imports shadow): a
        // cluster of that type is then not decodable and NACKed as such.
        if alone.open_file(f).is_ok() {
            for file in alone.file_descriptor_set().file {
                if !set.file.iter().any(|g| g.name == file.name) {
                    set.file.push(file);
                }
            }
        }
    }
    newer_fields(&mut set);
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("envoy_descriptors.bin");
    fs::write(&out, prost::Message::encode_to_vec(&set)).expect("write descriptor set");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Fields of Envoy 1.40's API that the protos `envoy-types` ships predate, added to their
/// messages so a pushed resource that sets them decodes whole: `ZipkinConfig.collector_service`
/// (field 9, a `config.core.v3.HttpService`), which istiod ≥ 1.29 sends instead of
/// `collector_cluster`.
fn newer_fields(set: &mut prost_types::FileDescriptorSet) {
    use prost_types::{
        field_descriptor_proto::Label, field_descriptor_proto::Type, FieldDescriptorProto,
    };
    const HTTP_SERVICE: &str = "envoy/config/core/v3/http_service.proto";
    let file = set
        .file
        .iter_mut()
        .find(|f| f.name() == "envoy/config/trace/v3/zipkin.proto")
        .expect("zipkin.proto in envoy-types");
    let zipkin = file
        .message_type
        .iter_mut()
        .find(|m| m.name() == "ZipkinConfig")
        .expect("ZipkinConfig");
    if zipkin.field.iter().any(|f| f.number() == 9) {
        return;
    }
    zipkin.field.push(FieldDescriptorProto {
        name: Some("collector_service".into()),
        number: Some(9),
        label: Some(Label::Optional as i32),
        r#type: Some(Type::Message as i32),
        type_name: Some(".envoy.config.core.v3.HttpService".into()),
        json_name: Some("collectorService".into()),
        ..Default::default()
    });
    if !file.dependency.iter().any(|d| d == HTTP_SERVICE) {
        file.dependency.push(HTTP_SERVICE.into());
    }
}

fn collect(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "proto") {
            out.push(p);
        }
    }
}
