package flows_test

import (
	"go/ast"
	"go/doc"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// modulePath is the import path of the repository's root; the examples,
// the benchmark command and the other nested modules live under it too.
const modulePath = "github.com/flowsrun/flows"

// docPackage is one package's documentation as pkg.go.dev reads it.
type docPackage struct {
	dir  string // relative to the repository root
	pkg  *doc.Package
	fset *token.FileSet
	// docFiles are the files that carry a package comment.
	docFiles []string
}

// docLoader parses packages' documentation once each: the repository's
// and the standard library's.
type docLoader struct {
	mu    sync.Mutex
	cache map[string]*docPackage // by import path; nil: no such package
}

// load returns the documentation of the package at importPath, or nil if
// there is no such package here or in the standard library.
func (l *docLoader) load(t *testing.T, importPath string) *docPackage {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if p, ok := l.cache[importPath]; ok {
		return p
	}
	var dir string
	switch {
	case importPath == modulePath:
		dir = "."
	case strings.HasPrefix(importPath, modulePath+"/"):
		dir = strings.TrimPrefix(importPath, modulePath+"/")
	default:
		dir = filepath.Join(runtime.GOROOT(), "src", importPath)
	}
	p := parseDocDir(t, dir, importPath)
	l.cache[importPath] = p
	return p
}

// parseDocDir parses the non-test Go files of dir into their package's
// documentation, or returns nil if dir holds none.
func parseDocDir(t *testing.T, dir, importPath string) *docPackage {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	fset := token.NewFileSet()
	var files []*ast.File
	var docFiles []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments)
		require.NoError(t, err)
		if ignoredByBuild(f) {
			continue
		}
		files = append(files, f)
		if f.Doc != nil {
			docFiles = append(docFiles, name)
		}
	}
	if len(files) == 0 {
		return nil
	}
	p, err := doc.NewFromFiles(fset, files, importPath)
	require.NoError(t, err)
	return &docPackage{dir: dir, pkg: p, fset: fset, docFiles: docFiles}
}

// ignoredByBuild reports whether a file is left out of every build
// (//go:build ignore), as generators are.
func ignoredByBuild(f *ast.File) bool {
	for _, c := range f.Comments {
		if c.Pos() > f.Package {
			break
		}
		for _, l := range c.List {
			if strings.HasPrefix(l.Text, "//go:build") && strings.Contains(l.Text, "ignore") {
				return true
			}
		}
	}
	return false
}

// repoPackages returns the import paths of the repository's packages, in
// every module: what pkg.go.dev shows.
func repoPackages(t *testing.T) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		base := d.Name()
		if path != "." && (strings.HasPrefix(base, ".") || strings.HasPrefix(base, "_") || base == "testdata" || base == "artifacts") {
			return filepath.SkipDir
		}
		matches, _ := filepath.Glob(filepath.Join(path, "*.go"))
		for _, m := range matches {
			if !strings.HasSuffix(m, "_test.go") {
				ip := modulePath
				if path != "." {
					ip += "/" + filepath.ToSlash(path)
				}
				paths = append(paths, ip)
				break
			}
		}
		return nil
	})
	require.NoError(t, err)
	sort.Strings(paths)
	return paths
}

// docComments returns every doc comment pkg.go.dev renders for p, by the
// name it documents; an exported name without one maps to "".
func docComments(p *doc.Package) map[string]string {
	out := map[string]string{"package " + p.Name: p.Doc}
	values := func(vs []*doc.Value) {
		for _, v := range vs {
			if v.Doc != "" {
				out[strings.Join(v.Names, ", ")] = v.Doc
				continue
			}
			// A group without a comment of its own: each of its
			// names needs one.
			for _, spec := range v.Decl.Specs {
				vs := spec.(*ast.ValueSpec)
				text := vs.Doc.Text() + vs.Comment.Text()
				for _, n := range vs.Names {
					if n.IsExported() {
						out[n.Name] = text
					}
				}
			}
		}
	}
	funcs := func(prefix string, fs []*doc.Func) {
		for _, f := range fs {
			out[prefix+f.Name] = f.Doc
		}
	}
	values(p.Consts)
	values(p.Vars)
	funcs("", p.Funcs)
	for _, typ := range p.Types {
		out[typ.Name] = typ.Doc
		values(typ.Consts)
		values(typ.Vars)
		funcs("", typ.Funcs)
		funcs(typ.Name+".", typ.Methods)
	}
	return out
}

// bracketed finds text in square brackets that looks like a doc link, a
// name or a qualified name, in plain text: a link that did not resolve,
// which pkg.go.dev shows as it is, brackets and all.
var bracketed = regexp.MustCompile(`\[\*?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\]`)

// symbolExists reports whether p documents name, or method or field name
// of type recv.
func symbolExists(p *doc.Package, recv, name string) bool {
	has := func(vs []*doc.Value) bool {
		for _, v := range vs {
			for _, n := range v.Names {
				if n == name {
					return true
				}
			}
		}
		return false
	}
	hasFunc := func(fs []*doc.Func) bool {
		for _, f := range fs {
			if f.Name == name {
				return true
			}
		}
		return false
	}
	if recv == "" && (has(p.Consts) || has(p.Vars) || hasFunc(p.Funcs)) {
		return true
	}
	for _, typ := range p.Types {
		if recv == "" && (typ.Name == name || has(typ.Consts) || has(typ.Vars) || hasFunc(typ.Funcs)) {
			return true
		}
		if recv == typ.Name && (hasFunc(typ.Methods) || hasMember(typ, name)) {
			return true
		}
	}
	return false
}

// hasMember reports whether typ, a struct or an interface, declares a
// field or method called name.
func hasMember(typ *doc.Type, name string) bool {
	for _, spec := range typ.Decl.Specs {
		ts, ok := spec.(*ast.TypeSpec)
		if !ok || ts.Name.Name != typ.Name {
			continue
		}
		var fields *ast.FieldList
		switch t := ts.Type.(type) {
		case *ast.StructType:
			fields = t.Fields
		case *ast.InterfaceType:
			fields = t.Methods
		}
		if fields == nil {
			return false
		}
		for _, f := range fields.List {
			for _, n := range f.Names {
				if n.Name == name {
					return true
				}
			}
		}
	}
	return false
}

// TestPackageDocs checks what pkg.go.dev shows of every package of the
// repository: a package comment, in one file, whose first sentence names
// the package (the synopsis in listings); doc links ([pkg.Name], [Name])
// that point at symbols that exist; no bracketed name left unlinked; and
// links to pkg.go.dev pages of this repository that point at symbols
// that exist.
func TestPackageDocs(t *testing.T) {
	loader := &docLoader{cache: map[string]*docPackage{}}
	paths := repoPackages(t)
	require.Contains(t, paths, modulePath+"/ssehttp", "the walk found the packages")
	for _, ip := range paths {
		t.Run(strings.TrimPrefix(strings.TrimPrefix(ip, modulePath), "/"), func(t *testing.T) {
			dp := loader.load(t, ip)
			require.NotNil(t, dp)
			p := dp.pkg

			word := "Package " + p.Name + " "
			if p.Name == "main" {
				word = "Command " + filepath.Base(dp.dir) + " "
			}
			assert.True(t, strings.HasPrefix(p.Doc, word), "the package comment starts with %q: %.60q", word, p.Doc)
			assert.Len(t, dp.docFiles, 1, "one file carries the package comment, else pkg.go.dev joins them: %v", dp.docFiles)
			assert.NotEmpty(t, p.Synopsis(p.Doc), "a first sentence for the listings")

			parser := p.Parser()
			for name, text := range docComments(p) {
				if text == "" {
					t.Errorf("%s has no doc comment", name)
					continue
				}
				d := parser.Parse(text)
				for _, def := range d.Links {
					checkLinkDef(t, loader, name, def)
				}
				walkText(d, func(x comment.Text) {
					switch x := x.(type) {
					case comment.Plain:
						for _, m := range bracketed.FindAllString(string(x), -1) {
							t.Errorf("%s: %s is not a doc link: name a symbol of this package, an imported package's, or the standard library's, or write the full import path", name, m)
						}
					case *comment.DocLink:
						checkDocLink(t, loader, ip, name, x)
					}
				})
			}
		})
	}
}

// walkText calls f for every piece of text of d outside code blocks.
func walkText(d *comment.Doc, f func(comment.Text)) {
	var texts func([]comment.Text)
	texts = func(ts []comment.Text) {
		for _, x := range ts {
			f(x)
			switch x := x.(type) {
			case *comment.Link:
				texts(x.Text)
			case *comment.DocLink:
				texts(x.Text)
			case comment.Italic:
			}
		}
	}
	var blocks func([]comment.Block)
	blocks = func(bs []comment.Block) {
		for _, b := range bs {
			switch b := b.(type) {
			case *comment.Paragraph:
				texts(b.Text)
			case *comment.Heading:
				texts(b.Text)
			case *comment.List:
				for _, it := range b.Items {
					blocks(it.Content)
				}
			}
		}
	}
	blocks(d.Content)
}

// checkDocLink checks that a doc link in the documentation of name, in
// package from, points at a package and symbol that exist.
func checkDocLink(t *testing.T, loader *docLoader, from, name string, l *comment.DocLink) {
	t.Helper()
	target := l.ImportPath
	if target == "" {
		target = from // the parser checked the symbol already
		return
	}
	dp := loader.load(t, target)
	if dp == nil {
		t.Errorf("%s: [%s] links to package %s, which does not exist", name, linkText(l), target)
		return
	}
	if l.Name != "" && !symbolExists(dp.pkg, l.Recv, l.Name) {
		t.Errorf("%s: [%s] links to %s, which has no %s", name, linkText(l), target, strings.TrimPrefix(l.Recv+"."+l.Name, "."))
	}
}

// checkLinkDef checks a link definition that points at pkg.go.dev's page
// of a package of this repository: the package and the symbol after # must
// exist.
func checkLinkDef(t *testing.T, loader *docLoader, name string, def *comment.LinkDef) {
	t.Helper()
	u, err := url.Parse(def.URL)
	if err != nil || u.Host != "pkg.go.dev" || !strings.HasPrefix(u.Path, "/"+modulePath) {
		return
	}
	target := strings.TrimPrefix(u.Path, "/")
	dp := loader.load(t, target)
	if dp == nil {
		t.Errorf("%s: [%s] links to package %s, which does not exist", name, def.Text, target)
		return
	}
	if u.Fragment == "" {
		return
	}
	recv, sym, ok := strings.Cut(u.Fragment, ".")
	if !ok {
		recv, sym = "", recv
	}
	if !symbolExists(dp.pkg, recv, sym) {
		t.Errorf("%s: [%s] links to %s#%s, which does not exist", name, def.Text, target, u.Fragment)
	}
}

// linkText returns a doc link as it was written.
func linkText(l *comment.DocLink) string {
	var b strings.Builder
	for _, x := range l.Text {
		if p, ok := x.(comment.Plain); ok {
			b.WriteString(string(p))
		}
	}
	return b.String()
}
