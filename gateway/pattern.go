package gateway

import (
	"errors"
	"unicode/utf8"
)

// User id patterns (--upstream-users) have path.Match's syntax, but user
// ids are not paths: '*' matches any run of characters and '?' any one
// character, '/' included, so "*" alone is everyone.
//
//	*        any run of characters, also none
//	?        any one character
//	[a-z0-9] one character of a class; [^…] one not in it
//	\c       the character c itself
//	c        the character c itself
//
// ValidUserPattern reports a malformed pattern; a malformed pattern matches
// nothing.

// ValidUserPattern reports whether p is a well-formed user id pattern.
func ValidUserPattern(p string) error {
	if p == "" {
		return errors.New("empty pattern")
	}
	_, err := parseUserPattern(p)
	return err
}

// MatchUserPattern reports whether the user id matches pattern p.
func MatchUserPattern(p, id string) bool {
	toks, err := parseUserPattern(p)
	return err == nil && matchTokens(toks, id)
}

type patKind uint8

const (
	patLiteral patKind = iota
	patAny             // ?
	patStar            // *
	patClass           // [...]
)

type patToken struct {
	kind   patKind
	r      rune      // patLiteral
	neg    bool      // patClass: [^...]
	ranges [][2]rune // patClass: lo, hi inclusive
}

func (t *patToken) matches(r rune) bool {
	switch t.kind {
	case patLiteral:
		return r == t.r
	case patClass:
		in := false
		for _, rg := range t.ranges {
			if rg[0] <= r && r <= rg[1] {
				in = true
				break
			}
		}
		return in != t.neg
	}
	return true // patAny
}

var (
	errPatternEscape = errors.New(`ends with a lone \`)
	errPatternClass  = errors.New("unterminated or empty [ ] class")
	errPatternRange  = errors.New("bad character range in a [ ] class")
	errPatternUTF8   = errors.New("not valid UTF-8")
)

func parseUserPattern(p string) ([]patToken, error) {
	if !utf8.ValidString(p) {
		return nil, errPatternUTF8
	}
	var toks []patToken
	for i := 0; i < len(p); {
		switch p[i] {
		case '*':
			if n := len(toks); n == 0 || toks[n-1].kind != patStar { // "**" is "*"
				toks = append(toks, patToken{kind: patStar})
			}
			i++
		case '?':
			toks = append(toks, patToken{kind: patAny})
			i++
		case '\\':
			if i+1 == len(p) {
				return nil, errPatternEscape
			}
			r, n := utf8.DecodeRuneInString(p[i+1:])
			toks = append(toks, patToken{kind: patLiteral, r: r})
			i += 1 + n
		case '[':
			t := patToken{kind: patClass}
			i++
			if i < len(p) && p[i] == '^' {
				t.neg = true
				i++
			}
			for {
				if i == len(p) {
					return nil, errPatternClass
				}
				if p[i] == ']' && len(t.ranges) > 0 {
					i++
					break
				}
				lo, n, err := classChar(p[i:])
				if err != nil {
					return nil, err
				}
				i += n
				hi := lo
				if i < len(p) && p[i] == '-' {
					if hi, n, err = classChar(p[i+1:]); err != nil {
						return nil, err
					}
					i += 1 + n
					if hi < lo {
						return nil, errPatternRange
					}
				}
				t.ranges = append(t.ranges, [2]rune{lo, hi})
			}
			toks = append(toks, t)
		default:
			r, n := utf8.DecodeRuneInString(p[i:])
			toks = append(toks, patToken{kind: patLiteral, r: r})
			i += n
		}
	}
	return toks, nil
}

// classChar reads one character of a class (or a range's end), which must
// not be an unescaped '-' or ']'.
func classChar(s string) (rune, int, error) {
	if s == "" {
		return 0, 0, errPatternClass
	}
	switch s[0] {
	case '-', ']':
		return 0, 0, errPatternRange
	case '\\':
		if len(s) == 1 {
			return 0, 0, errPatternEscape
		}
		r, n := utf8.DecodeRuneInString(s[1:])
		return r, 1 + n, nil
	}
	r, n := utf8.DecodeRuneInString(s)
	return r, n, nil
}

// matchTokens matches id against toks: on a mismatch after a '*', the
// star takes one more character and matching resumes after it. Linear in
// len(id) times the number of tokens.
func matchTokens(toks []patToken, id string) bool {
	ti, si := 0, 0
	star, starAt := -1, 0 // the last '*' seen, and where in id it stopped
	for si < len(id) {
		if ti < len(toks) && toks[ti].kind == patStar {
			star, starAt = ti, si
			ti++
			continue
		}
		r, n := utf8.DecodeRuneInString(id[si:])
		if ti < len(toks) && toks[ti].matches(r) {
			ti++
			si += n
			continue
		}
		if star < 0 {
			return false
		}
		_, n = utf8.DecodeRuneInString(id[starAt:])
		starAt += n
		ti, si = star+1, starAt
	}
	for ti < len(toks) && toks[ti].kind == patStar {
		ti++
	}
	return ti == len(toks)
}
