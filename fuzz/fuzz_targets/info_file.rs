//! An EMR info file's bytes through the file parser, then role detection on a node whose
//! instance.json, extraInstanceData.json and job-flow.json are all those bytes: never a panic,
//! and an error always names the file.
#![no_main]
use emrboot_node::info::{parse_bytes, NodeInfo};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/mnt/var/lib/info/instance.json");
    match parse_bytes(path, data) {
        Err(e) => assert!(e.to_string().contains("instance.json"), "{e}"),
        Ok(file) => {
            let info = NodeInfo {
                instance: file.clone(),
                extra: Some(file.clone()),
                job_flow: Some(file),
            };
            let _ = info.primary_master_id();
            if let Err(e) = emrboot_node::role::from_files(&info) {
                assert!(e.to_string().contains("instance.json"), "{e}");
            }
        }
    }
});
