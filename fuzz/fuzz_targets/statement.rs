//! A channel's statement (`reconcile::statement::Statement`, what
//! `payroute reconcile` reads) on arbitrary bytes, with three column sets:
//! yuan with fee and status in Chinese (encoding sniffed: UTF-8 or GBK),
//! fen without status (UTF-8), and English columns in GBK. Every row read
//! or a clean error naming the line, never a panic; rows read are sane.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use payroute::fuzz_api::StatementReader;

static READERS: LazyLock<Vec<StatementReader>> = LazyLock::new(|| {
    vec![
        StatementReader::new(
            "{ trade_no = \"商户订单号\", amount = \"金额\", amount_unit = \"yuan\", fee = \"手续费\", \
             status = \"状态\", paid_values = [\"成功\", \"SUCCESS\"], refund_values = [\"退款\"] }",
        ),
        StatementReader::new(
            "{ trade_no = \"trade_no\", amount = \"amount\", amount_unit = \"fen\", encoding = \"utf-8\" }",
        ),
        StatementReader::new(
            "{ trade_no = \"out_trade_no\", amount = \"total\", fee = \"fee\", status = \"status\", \
             paid_values = [\"SUCCESS\"], refund_values = [\"REFUND\"], encoding = \"gbk\" }",
        ),
    ]
});

fuzz_target!(|bytes: &[u8]| {
    for reader in READERS.iter() {
        let Ok(rows) = reader.read_all(bytes) else {
            continue;
        };
        let mut last = 0;
        for row in rows {
            assert!(row.line > last, "rows in file order: {row:?} after line {last}");
            last = row.line;
            assert!(!row.trade_no.is_empty() && row.trade_no.len() <= 64, "{row:?}");
            assert!(row.amount >= 0 && row.fee.is_none_or(|f| f >= 0), "{row:?}");
        }
    }
});
