//! Typed method arguments: turning the `Vec<Value>` a method receives into
//! Rust values, so methods never read arguments by position.
//!
//! A method decodes its arguments once, into a tuple (or its own struct
//! implementing [`FromArgs`]), and gets a `TypeError` naming the argument
//! when one has the wrong kind:
//!
//! ```
//! use capstan_node::runtime::args::{Rest, decode};
//! use capstan_protocol::Value;
//!
//! let (name, count, label): (String, f64, Option<String>) = decode(vec![Value::from("a"), Value::from(2.0)]).unwrap();
//! assert_eq!((name.as_str(), count, label), ("a", 2.0, None));
//!
//! let Rest(names): Rest<String> = decode(vec![Value::from("x"), Value::from("y")]).unwrap();
//! assert_eq!(names, ["x", "y"]);
//!
//! let error = decode::<(String,)>(vec![Value::from(1.0)]).unwrap_err();
//! assert_eq!(&*error.message, "argument 1 must be a string");
//! ```
//!
//! As in JavaScript, a missing argument is `undefined` ([`Value`] decodes
//! it as such, [`Option`] as `None`) and extra arguments are ignored; an
//! interface guard is what checks a method's arity.

use capstan_protocol::{ErrorValue, Value};

/// Why one argument could not be decoded.
#[derive(Debug)]
pub enum ArgError {
    /// It is not the kind of value wanted; the decoder names the argument.
    Expected(&'static str),
    /// It is the right kind but not valid; the error is given as it is.
    Invalid(ErrorValue),
}

impl From<ErrorValue> for ArgError {
    fn from(error: ErrorValue) -> Self {
        ArgError::Invalid(error)
    }
}

impl ArgError {
    /// The error for argument `position` (0-based).
    fn at(self, position: usize) -> ErrorValue {
        match self {
            ArgError::Expected(what) => ErrorValue::type_error(format!("argument {} must be {what}", position + 1)),
            ArgError::Invalid(error) => error,
        }
    }
}

/// A type one argument decodes into.
pub trait FromArg: Sized {
    /// Decodes a given argument.
    fn from_arg(value: Value) -> Result<Self, ArgError>;

    /// Decodes a missing argument; by default as `undefined`.
    fn from_missing() -> Result<Self, ArgError> {
        Self::from_arg(Value::Undefined)
    }
}

impl FromArg for Value {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        Ok(value)
    }
}

impl FromArg for String {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        match value {
            Value::String(text) => Ok(text.to_string()),
            _ => Err(ArgError::Expected("a string")),
        }
    }
}

impl FromArg for bool {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        match value {
            Value::Boolean(flag) => Ok(flag),
            _ => Err(ArgError::Expected("a boolean")),
        }
    }
}

impl FromArg for f64 {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        match value {
            Value::Number(number) => Ok(number),
            _ => Err(ArgError::Expected("a number")),
        }
    }
}

/// The largest integer a JavaScript number holds exactly, plus one.
const SAFE_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

impl FromArg for u64 {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        match value {
            Value::Number(n) if n >= 0.0 && n.fract() == 0.0 && n < SAFE_INTEGER_LIMIT => Ok(n as u64),
            _ => Err(ArgError::Expected("a non-negative safe integer")),
        }
    }
}

/// An array whose every element decodes as `T`.
impl<T: FromArg> FromArg for Vec<T> {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        let Value::Array(items) = value else {
            return Err(ArgError::Expected("an array"));
        };
        items.iter().cloned().map(T::from_arg).collect()
    }
}

/// `undefined` or missing is `None`; anything else decodes as `T`.
impl<T: FromArg> FromArg for Option<T> {
    fn from_arg(value: Value) -> Result<Self, ArgError> {
        match value {
            Value::Undefined => Ok(None),
            other => T::from_arg(other).map(Some),
        }
    }
}

/// A whole argument list decodes into this type.
pub trait FromArgs: Sized {
    fn from_args(args: Vec<Value>) -> Result<Self, ErrorValue>;
}

/// Decodes a method's arguments.
pub fn decode<T: FromArgs>(args: Vec<Value>) -> Result<T, ErrorValue> {
    T::from_args(args)
}

/// Every argument, each decoded as `T` (a rest parameter).
#[derive(Clone, Debug, PartialEq)]
pub struct Rest<T>(pub Vec<T>);

impl<T: FromArg> FromArgs for Rest<T> {
    fn from_args(args: Vec<Value>) -> Result<Self, ErrorValue> {
        args.into_iter()
            .enumerate()
            .map(|(position, value)| T::from_arg(value).map_err(|error| error.at(position)))
            .collect::<Result<Vec<T>, ErrorValue>>()
            .map(Rest)
    }
}

impl FromArgs for () {
    fn from_args(_: Vec<Value>) -> Result<Self, ErrorValue> {
        Ok(())
    }
}

/// Takes the next argument and decodes it as `T`.
fn next_arg<T: FromArg>(args: &mut std::vec::IntoIter<Value>, position: usize) -> Result<T, ErrorValue> {
    match args.next() {
        Some(value) => T::from_arg(value),
        None => T::from_missing(),
    }
    .map_err(|error| error.at(position))
}

macro_rules! tuple_from_args {
    ($($name:ident : $position:literal),+) => {
        impl<$($name: FromArg),+> FromArgs for ($($name,)+) {
            fn from_args(args: Vec<Value>) -> Result<Self, ErrorValue> {
                let mut args = args.into_iter();
                Ok(($(next_arg::<$name>(&mut args, $position)?,)+))
            }
        }
    };
}

tuple_from_args!(A: 0);
tuple_from_args!(A: 0, B: 1);
tuple_from_args!(A: 0, B: 1, C: 2);
tuple_from_args!(A: 0, B: 1, C: 2, D: 3);
tuple_from_args!(A: 0, B: 1, C: 2, D: 3, E: 4);
tuple_from_args!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tuple_decodes_each_argument_by_type() {
        let (text, flag, number, count): (String, bool, f64, u64) = decode(vec![
            Value::from("a"),
            Value::from(true),
            Value::from(1.5),
            Value::from(3.0),
        ])
        .unwrap();
        assert_eq!((text.as_str(), flag, number, count), ("a", true, 1.5, 3));
    }

    #[test]
    fn a_wrong_kind_is_a_type_error_naming_the_argument() {
        let error = decode::<(String, String)>(vec![Value::from("a"), Value::from(2.0)]).unwrap_err();
        assert_eq!(&*error.name, "TypeError");
        assert_eq!(&*error.message, "argument 2 must be a string");
        let error = decode::<(u64,)>(vec![Value::from(-1.0)]).unwrap_err();
        assert_eq!(&*error.message, "argument 1 must be a non-negative safe integer");
    }

    #[test]
    fn missing_and_undefined_arguments_are_none_or_undefined() {
        let (first, second, third): (Option<String>, Option<String>, Value) = decode(vec![Value::Undefined]).unwrap();
        assert_eq!((first, second), (None, None));
        assert!(third.is_undefined());
        let error = decode::<(String,)>(Vec::new()).unwrap_err();
        assert_eq!(&*error.message, "argument 1 must be a string");
    }

    #[test]
    fn an_array_decodes_element_by_element() {
        let (names,): (Vec<String>,) = decode(vec![Value::array([Value::from("a"), Value::from("b")])]).unwrap();
        assert_eq!(names, ["a", "b"]);
        let error = decode::<(Vec<String>,)>(vec![Value::array([Value::from(1.0)])]).unwrap_err();
        assert_eq!(&*error.message, "argument 1 must be a string");
    }

    #[test]
    fn rest_takes_every_argument_and_extras_are_ignored() {
        let Rest(names): Rest<String> = decode(vec![Value::from("a"), Value::from("b"), Value::from("c")]).unwrap();
        assert_eq!(names, ["a", "b", "c"]);
        let error = decode::<Rest<String>>(vec![Value::from("a"), Value::from(1.0)]).unwrap_err();
        assert_eq!(&*error.message, "argument 2 must be a string");
        let (first,): (String,) = decode(vec![Value::from("a"), Value::from("ignored")]).unwrap();
        assert_eq!(first, "a");
    }

    #[test]
    fn an_invalid_value_keeps_its_own_error() {
        #[derive(Debug)]
        struct Even(u64);
        impl FromArg for Even {
            fn from_arg(value: Value) -> Result<Self, ArgError> {
                let number = u64::from_arg(value)?;
                if number % 2 == 0 {
                    Ok(Even(number))
                } else {
                    Err(ErrorValue::range_error("not even").into())
                }
            }
        }
        assert_eq!(decode::<(Even,)>(vec![Value::from(4.0)]).unwrap().0.0, 4);
        let error = decode::<(Even,)>(vec![Value::from(3.0)]).unwrap_err();
        assert_eq!((&*error.name, &*error.message), ("RangeError", "not even"));
    }
}
