//! `text IN ('a', 'b', …)` over a list of text literals, as a lookup by length.
//!
//! DataFusion's `IN` over a static list hashes every row's string and probes a
//! hash table through a dynamic comparator: about fifty instructions a row, and
//! the rule pack's `IN` lists were 8 % of the correlation operator's work. The
//! lists in rules are short and made of literals, so each row's text is compared
//! only with the list's entries of the same length. Compiled rules swap DataFusion's
//! expression for this one ([`rewrite`]); what it computes is the same (NULL where
//! the text is NULL, `NOT IN` left to DataFusion).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{InListExpr, Literal};

type Expr = Arc<dyn PhysicalExpr>;

/// `expr IN (list)` for a text `expr` and a list of non-NULL text literals.
#[derive(Debug)]
pub(crate) struct TextInList {
    expr: Expr,
    /// The list as written (display, equality, hashing).
    list: Vec<String>,
    /// The list's entries by length: `by_len[n]` holds those of `n` bytes.
    by_len: Vec<Vec<Box<[u8]>>>,
}

impl TextInList {
    fn new(expr: Expr, list: Vec<String>) -> TextInList {
        let longest = list.iter().map(String::len).max().unwrap_or(0);
        let mut by_len: Vec<Vec<Box<[u8]>>> = vec![Vec::new(); longest + 1];
        for entry in &list {
            let same = &mut by_len[entry.len()];
            if !same.iter().any(|e| **e == *entry.as_bytes()) {
                same.push(entry.as_bytes().into());
            }
        }
        TextInList { expr, list, by_len }
    }

    fn contains(&self, text: &[u8]) -> bool {
        self.by_len
            .get(text.len())
            .is_some_and(|same| same.iter().any(|e| **e == *text))
    }
}

impl fmt::Display for TextInList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} IN (TEXT) ({:?})", self.expr, self.list)
    }
}

impl PartialEq for TextInList {
    fn eq(&self, other: &Self) -> bool {
        self.expr.eq(&other.expr) && self.list == other.list
    }
}

impl Eq for TextInList {}

impl Hash for TextInList {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.expr.hash(state);
        self.list.hash(state);
    }
}

impl PhysicalExpr for TextInList {
    fn data_type(&self, _input_schema: &Schema) -> datafusion::common::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> datafusion::common::Result<bool> {
        self.expr.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> datafusion::common::Result<ColumnarValue> {
        let values = self.expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let text = values
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("IN over text got {} values", values.data_type()))
            })?;
        let found =
            BooleanBuffer::collect_bool(text.len(), |i| self.contains(text.value(i).as_bytes()));
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            found,
            text.nulls().cloned(),
        ))))
    }

    fn children(&self) -> Vec<&Expr> {
        vec![&self.expr]
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Expr>) -> datafusion::common::Result<Expr> {
        let [expr] = <[Expr; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!("IN over text takes one child, got {}", c.len()))
        })?;
        Ok(Arc::new(TextInList::new(expr, self.list.clone())))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt_sql(f)?;
        write!(f, " IN (")?;
        for (i, entry) in self.list.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "'{}'", entry.replace('\'', "''"))?;
        }
        write!(f, ")")
    }
}

/// Replaces every `text IN (text literals)` of `expr` (not `NOT IN`, no NULL in
/// the list) with a [`TextInList`].
pub(crate) fn rewrite(expr: Expr, input: &Schema) -> datafusion::common::Result<Expr> {
    expr.transform_up(|node| {
        let Some(in_list) = node.downcast_ref::<InListExpr>() else {
            return Ok(Transformed::no(node));
        };
        if in_list.negated() || in_list.expr().data_type(input)? != DataType::Utf8 {
            return Ok(Transformed::no(node));
        }
        let list: Option<Vec<String>> = in_list
            .list()
            .iter()
            .map(|e| match e.downcast_ref::<Literal>()?.value() {
                ScalarValue::Utf8(Some(text)) => Some(text.clone()),
                _ => None,
            })
            .collect();
        match list {
            Some(list) => Ok(Transformed::yes(Arc::new(TextInList::new(
                Arc::clone(in_list.expr()),
                list,
            )) as Expr)),
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{Column, in_list, lit};

    #[test]
    fn answers_what_datafusion_in_answers() {
        let schema = Schema::new(vec![Field::new("s", DataType::Utf8, true)]);
        let rows = StringArray::from(vec![
            Some("deployments"),
            None,
            Some(""),
            Some("pods"),
            Some("pod"),
            Some("podsx"),
            Some("services"),
            Some("Services"),
            Some("exec"),
        ]);
        let batch =
            RecordBatch::try_new(Arc::new(schema.clone()), vec![Arc::new(rows)]).expect("batch");
        let column: Expr = Arc::new(Column::new("s", 0));
        for list in [
            vec!["deployments", "pods", "services"],
            vec!["", "exec", "exec"],
            vec!["x"],
            vec!["pods", "pod", "podsx", "deployments", "services", "exec"],
        ] {
            let literals: Vec<Expr> = list.iter().map(|s| lit(*s)).collect();
            let theirs = in_list(Arc::clone(&column), literals, &false, &schema).expect("in");
            let ours = rewrite(Arc::clone(&theirs), &schema).expect("rewrite");
            assert!(ours.downcast_ref::<TextInList>().is_some(), "{ours}");
            let eval = |e: &Expr| {
                e.evaluate(&batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .expect("evaluate")
            };
            assert_eq!(
                eval(&ours).as_ref(),
                eval(&theirs).as_ref(),
                "{list:?}: {ours}"
            );
        }
        // NOT IN and lists with NULL stay DataFusion's.
        let negated = in_list(Arc::clone(&column), vec![lit("a")], &true, &schema).expect("in");
        let kept = rewrite(negated, &schema).expect("rewrite");
        assert!(kept.downcast_ref::<InListExpr>().is_some());
        let with_null = in_list(
            Arc::clone(&column),
            vec![lit("a"), lit(ScalarValue::Utf8(None))],
            &false,
            &schema,
        )
        .expect("in");
        let kept = rewrite(with_null, &schema).expect("rewrite");
        assert!(kept.downcast_ref::<InListExpr>().is_some());
    }
}
