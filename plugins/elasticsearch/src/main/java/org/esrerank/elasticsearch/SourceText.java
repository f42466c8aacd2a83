package org.esrerank.elasticsearch;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The text the cross-encoder reads for one document: the values of the named {@code _source} fields, joined with a
 * space in the order the fields are named, cut at a number of characters. The same rule as esrerank's client side
 * ({@code retrieval/source_fields.py}), so both routes send the service the same text: paths are dotted and run
 * through objects and lists (every element's value, in order), a key that itself holds dots is found too, and
 * objects, booleans and blank values are left out.
 */
final class SourceText {

    private SourceText() {}

    static String join(Map<String, Object> source, List<String> paths, int maxChars) {
        StringBuilder text = new StringBuilder();
        for (String path : paths) {
            for (String value : read(source, path)) {
                if (blank(value)) {
                    continue;
                }
                if (text.length() > 0) {
                    text.append(' ');
                }
                text.append(value);
            }
        }
        String joined = text.toString();
        // cut in code points, as Python's str slicing does
        return joined.codePointCount(0, joined.length()) > maxChars
            ? joined.substring(0, joined.offsetByCodePoints(0, maxChars)) : joined;
    }

    /** Python's {@code not value.strip()}: whitespace as Python's str.isspace() has it (no-break spaces too). */
    static boolean blank(String value) {
        return value.codePoints().allMatch(c -> Character.isWhitespace(c) || Character.isSpaceChar(c) || c == 0x85);
    }

    /** A float as Python's {@code str()} writes it: 10000000.0, 1e+16, 1.5e-05, not Java's 1.0E7. */
    static String pythonFloat(double value) {
        if (Double.isNaN(value)) {
            return "nan";
        }
        if (Double.isInfinite(value)) {
            return value > 0 ? "inf" : "-inf";
        }
        if (value == 0) {
            return 1 / value < 0 ? "-0.0" : "0.0";
        }
        java.math.BigDecimal shortest = new java.math.BigDecimal(Double.toString(Math.abs(value))).stripTrailingZeros();
        String digits = shortest.unscaledValue().toString();
        int exponent = digits.length() - 1 - shortest.scale();
        String sign = value < 0 ? "-" : "";
        if (exponent < -4 || exponent >= 16) {
            String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
            return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + String.format(java.util.Locale.ROOT, "%02d",
                Math.abs(exponent));
        }
        String plain = shortest.toPlainString();
        return sign + (plain.contains(".") ? plain : plain + ".0");
    }

    static List<String> read(Object source, String path) {
        List<String> values = new ArrayList<>();
        if (source == null) {
            return values;
        }
        if (source instanceof List<?> list) {
            for (Object item : list) {
                values.addAll(read(item, path));
            }
            return values;
        }
        if (path.isEmpty()) {
            if (source instanceof Map || source instanceof Boolean) {
                return values;
            }
            String value = source instanceof Double || source instanceof Float
                ? pythonFloat(((Number) source).doubleValue()) : source.toString();
            if (blank(value) == false) {
                values.add(value);
            }
            return values;
        }
        if (!(source instanceof Map<?, ?> map)) {
            return values;
        }
        if (map.containsKey(path)) {
            return read(map.get(path), "");
        }
        int dot = path.indexOf('.');
        String head = dot < 0 ? path : path.substring(0, dot);
        String rest = dot < 0 ? "" : path.substring(dot + 1);
        if (map.containsKey(head)) {
            values = read(map.get(head), rest);
        }
        if (values.isEmpty()) { // a key that holds dots, e.g. {"meta.title": ...}
            for (Object key : map.keySet()) {
                String name = key.toString();
                if (name.contains(".") && path.startsWith(name + ".")) {
                    values = read(map.get(key), path.substring(name.length() + 1));
                    if (values.isEmpty() == false) {
                        break;
                    }
                }
            }
        }
        return values;
    }
}
