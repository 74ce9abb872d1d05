//! The default shared mode: the first process to open a file owns it and serves the
//! others over its socket.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use sealkv_engine::Store;

#[test]
fn a_second_handle_is_served_by_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sealkv");
    let owner = Store::create(&path, passphrase("pw"), fast_opts()).unwrap();
    eprintln!("created");
    owner.put("n", "a", b"1".to_vec()).unwrap();
    eprintln!("put");
    let client = Store::open(&path, passphrase("pw"), fast_opts()).unwrap();
    eprintln!("opened client");
    assert_eq!(&client.get_one("n", "a").unwrap().unwrap()[..], b"1");
    client.put("n", "b", b"2".to_vec()).unwrap();
    eprintln!("client put");
    assert_eq!(&owner.get_one("n", "b").unwrap().unwrap()[..], b"2");
}
