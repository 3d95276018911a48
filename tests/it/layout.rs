//! The layout invariant ARCHITECTURE.md states: no import cycles between the files under `src/`.
//!
//! Each file is a module; a module depends on the modules its `use` lines and `crate::`/`super::` paths
//! name, where a name a `mod.rs` re-exports from a child counts as that child. Edges between a module and
//! its own ancestors are left out (a `mod.rs` re-exporting its children, the children reading the types
//! it defines), and so is test code (`#[cfg(test)] mod …` and `tests.rs` files).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use regex::Regex;

type Module = Vec<String>;

fn modules(root: &Path, dir: &Path, out: &mut BTreeMap<Module, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            modules(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().with_extension("");
        let mut module: Module = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        if module == ["lib"] || module == ["main"] {
            module.clear();
        }
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        out.insert(module, text);
    }
}

/// The source without its test module and comments.
fn code(text: &str) -> String {
    let test_module = Regex::new(r"#\[cfg\(test\)\]\s*(pub\(crate\) )?mod \w+ \{").unwrap();
    let text = match test_module.find(text) {
        Some(found) => &text[..found.start()],
        None => text,
    };
    Regex::new(r"//.*")
        .unwrap()
        .replace_all(text, "")
        .into_owned()
}

struct Graph {
    files: BTreeMap<Module, String>,
    /// (module, name) → the child module a `pub use child::name` re-export brings it from.
    reexports: HashMap<(Module, String), Module>,
}

impl Graph {
    fn resolve(&self, path: &[String]) -> Module {
        let mut module = path.to_vec();
        while !module.is_empty() && !self.files.contains_key(&module) {
            module.pop();
        }
        while path.len() > module.len() {
            match self
                .reexports
                .get(&(module.clone(), path[module.len()].clone()))
            {
                Some(child) => module = child.clone(),
                None => break,
            }
        }
        module
    }

    fn edges(&self, module: &Module, text: &str) -> BTreeSet<Module> {
        let mut out = BTreeSet::new();
        let use_item = Regex::new(r"\buse\s+([^;]+);").unwrap();
        for found in use_item.captures_iter(text) {
            let body = found[1].split_whitespace().collect::<Vec<_>>().join(" ");
            let paths: Vec<String> = match (body.find('{'), body.ends_with('}')) {
                (Some(open), true) => split_top(&body[open + 1..body.len() - 1])
                    .into_iter()
                    .map(|tail| format!("{}{}", &body[..open], tail.trim()))
                    .collect(),
                _ => vec![body],
            };
            for path in paths {
                let path = path
                    .split(" as ")
                    .next()
                    .unwrap_or_default()
                    .replace(' ', "");
                let segs: Vec<String> = path
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let Some(first) = segs.first() else { continue };
                let target: Module = match first.as_str() {
                    "crate" => segs[1..].to_vec(),
                    "super" => up(module, &segs),
                    "self" => [module.clone(), segs[1..].to_vec()].concat(),
                    name => {
                        let child = [module.clone(), vec![name.to_owned()]].concat();
                        if !self.files.contains_key(&child) {
                            continue;
                        }
                        [module.clone(), segs.clone()].concat()
                    }
                };
                out.insert(self.resolve(&target));
            }
        }
        let inline_super = Regex::new(r"\bsuper((?:::\w+)+)").unwrap();
        let inline_crate = Regex::new(r"\bcrate((?:::\w+)+)").unwrap();
        for found in inline_super.captures_iter(text) {
            let segs: Vec<String> = ["super"]
                .into_iter()
                .chain(found[1].split("::").skip(1))
                .map(str::to_owned)
                .collect();
            out.insert(self.resolve(&up(module, &segs)));
        }
        for found in inline_crate.captures_iter(text) {
            let segs: Vec<String> = found[1].split("::").skip(1).map(str::to_owned).collect();
            out.insert(self.resolve(&segs));
        }
        let ancestor = |a: &Module, b: &Module| a.len() <= b.len() && b[..a.len()] == a[..];
        out.retain(|target| !ancestor(target, module) && !ancestor(module, target));
        out
    }
}

/// `segs` starts with one or more `super`: the module they name, relative to `module`.
fn up(module: &Module, segs: &[String]) -> Module {
    let mut base = module.clone();
    let mut rest = segs;
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    [base, rest.to_vec()].concat()
}

/// `a, b::{c, d}, e` split at the commas outside braces.
fn split_top(list: &str) -> Vec<String> {
    let (mut out, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in list.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: HashMap<Module, usize>,
        low: HashMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        found: Vec<Vec<Module>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &Module) {
            let n = self.index.len();
            self.index.insert(v.clone(), n);
            self.low.insert(v.clone(), n);
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.edges.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v.clone(), low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = &w == v;
                    component.push(w);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !tarjan.index.contains_key(v) {
            tarjan.visit(v);
        }
    }
    tarjan.found
}

fn import_cycles(root: &Path) -> Vec<String> {
    let mut files = BTreeMap::new();
    modules(root, root, &mut files);
    let files: BTreeMap<Module, String> = files.into_iter().map(|(m, t)| (m, code(&t))).collect();
    let reexport = Regex::new(r"\bpub(?:\([a-z]+\))?\s+use\s+([^;]+);").unwrap();
    let shape = Regex::new(r"^(?:self::)?(\w+)::(?:\{(.*)\}|(\w+))$").unwrap();
    let mut reexports = HashMap::new();
    for (module, text) in &files {
        for found in reexport.captures_iter(text) {
            let body = found[1].split_whitespace().collect::<Vec<_>>().join(" ");
            let Some(parts) = shape.captures(&body) else {
                continue;
            };
            let child = [module.clone(), vec![parts[1].to_owned()]].concat();
            if !files.contains_key(&child) {
                continue;
            }
            let names = parts.get(2).or(parts.get(3)).map_or("", |m| m.as_str());
            for name in names.split(',') {
                let name = name.rsplit(" as ").next().unwrap_or_default().trim();
                if !name.is_empty() {
                    reexports.insert((module.clone(), name.to_owned()), child.clone());
                }
            }
        }
    }
    let graph = Graph { files, reexports };
    let edges: BTreeMap<Module, BTreeSet<Module>> = graph
        .files
        .iter()
        .map(|(module, text)| (module.clone(), graph.edges(module, text)))
        .collect();
    cycles(&edges)
        .into_iter()
        .map(|component| {
            let mut names: Vec<String> = component.iter().map(|m| m.join("::")).collect();
            names.sort();
            names.join(" ↔ ")
        })
        .collect()
}

#[test]
fn no_import_cycles_between_source_files() {
    let cycles = import_cycles(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

/// The checker finds a cycle where there is one: two sibling files naming each other.
#[test]
fn the_cycle_check_sees_a_sibling_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("a")).unwrap();
    std::fs::write(root.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(root.join("a/mod.rs"), "mod x;\nmod y;\npub use x::X;\n").unwrap();
    std::fs::write(root.join("a/x.rs"), "use super::y::Y;\npub struct X;\n").unwrap();
    std::fs::write(root.join("a/y.rs"), "pub struct Y(crate::a::X);\n").unwrap();
    std::fs::write(root.join("b.rs"), "use crate::a::X;\n").unwrap();
    assert_eq!(import_cycles(root), ["a::x ↔ a::y"]);
    std::fs::write(root.join("a/y.rs"), "pub struct Y;\n").unwrap();
    assert!(import_cycles(root).is_empty());
}
