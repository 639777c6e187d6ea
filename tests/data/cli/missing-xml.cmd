validate @data/nonexistent.xml
