//! The ACL check per request (`User::check`): a `GET` and a 10-key `MGET` as a user with three
//! prefix key patterns and a category rule, against `+@all ~*` (the check's fast path).

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]
// Fixed, valid inputs: a bench that cannot build them should stop at once.
#![allow(clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keyway::acl::Users;
use keyway::protocol::resp::command::lookup;

fn check(c: &mut Criterion) {
    let lines = vec![
        "app on nopass ~v16:* ~v1k:* ~mylist &* +@all -@admin".to_string(),
        "all on nopass ~* &* +@all".to_string(),
    ];
    let users = Users::parse(&lines, None).expect("valid users");
    let get: Vec<Vec<u8>> = vec![b"GET".to_vec(), b"v16:000000001234".to_vec()];
    let mut mget: Vec<Vec<u8>> = vec![b"MGET".to_vec()];
    mget.extend((0..10).map(|i| format!("v16:00000000{i:04}").into_bytes()));
    let mut group = c.benchmark_group("acl_check");
    group.throughput(Throughput::Elements(1));
    for (name, args) in [("get", &get), ("mget_10keys", &mget)] {
        let command = lookup(&args[0]).expect("known command");
        for user in ["app", "all"] {
            let (_, u) = users.find(user.as_bytes()).expect("user");
            group.bench_function(format!("{name}/{user}"), |b| {
                b.iter(|| black_box(u.check(command, black_box(args))))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, check);
criterion_main!(benches);
