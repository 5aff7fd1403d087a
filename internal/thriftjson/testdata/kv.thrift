typedef string Key

enum Color { RED = 1, GREEN = 2 }

struct Item {
  1: required Key key
  2: optional i64 version
  3: optional list<string> tags
  4: optional map<string, i32> counts
  5: optional map<i32, string> byID
  6: optional Color color
  7: optional binary blob
  8: optional double weight
  9: optional set<i16> small
}

exception NotFound { 1: string key }

service Base {
  string ping()
}

service KV extends Base {
  Item get(1: Key key) throws (1: NotFound notFound)
  void put(1: Item item)
}
