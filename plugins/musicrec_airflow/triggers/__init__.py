"""Event triggers for AssetWatchers (design §2): MongoDB change streams."""
